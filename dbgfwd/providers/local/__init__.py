"""Local provider: ranks on this machine (see provider.py)."""

from dbgfwd.providers.local.provider import LocalProvider

__all__ = ["LocalProvider"]
