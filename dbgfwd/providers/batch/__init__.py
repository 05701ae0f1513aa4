"""AWS Batch provider: ranks of Batch jobs reached through SSM (see provider.py; boto3 is imported lazily)."""

from dbgfwd.providers.batch.provider import BatchProvider

__all__ = ["BatchProvider"]
