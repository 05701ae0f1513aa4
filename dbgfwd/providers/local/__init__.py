"""Local provider: ranks on this machine (see provider.py)."""


def __getattr__(name: str):
    # on first use only: the CLI reads options.py of this package without loading the provider
    if name == "LocalProvider":
        from dbgfwd.providers.local.provider import LocalProvider

        return LocalProvider
    raise AttributeError(name)


__all__ = ["LocalProvider"]
