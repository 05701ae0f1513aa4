"""Kubernetes / OpenShift provider: ranks in pods (see provider.py; the SDK is imported lazily)."""


def __getattr__(name: str):
    # on first use only: the CLI reads options.py of this package without loading the provider
    if name == "KubernetesProvider":
        from dbgfwd.providers.kubernetes.provider import KubernetesProvider

        return KubernetesProvider
    raise AttributeError(name)


__all__ = ["KubernetesProvider"]
