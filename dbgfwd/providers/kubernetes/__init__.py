"""Kubernetes / OpenShift provider: ranks in pods (see provider.py; the SDK is imported lazily)."""

from dbgfwd.providers.kubernetes.provider import KubernetesProvider

__all__ = ["KubernetesProvider"]
