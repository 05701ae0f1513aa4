"""AWS Batch provider: ranks of Batch jobs reached through SSM (see provider.py; boto3 is imported lazily)."""


def __getattr__(name: str):
    # on first use only: the CLI reads options.py of this package without loading the provider
    if name == "BatchProvider":
        from dbgfwd.providers.batch.provider import BatchProvider

        return BatchProvider
    raise AttributeError(name)


__all__ = ["BatchProvider"]
