import pytest

from tests.support import require
from tests.support.k8s_pods import netns_available


@pytest.fixture
def k8s(tmp_path):
    """A fresh test apiserver+kubelet; pods are network namespaces (root needed, as in CI)."""
    ok, why = netns_available()
    if not ok:
        require.missing(f"test kubelet {why}")
    from tests.support.k8s_server import K8sServer

    with K8sServer() as srv:
        srv.kubeconfig_path = srv.kubeconfig(tmp_path / "kubeconfig")
        yield srv


@pytest.fixture
def k8s_tls(tmp_path):
    """The same server over HTTPS, with a certificate of its own CA (the kubeconfig's certificate-authority-data)."""
    ok, why = netns_available()
    if not ok:
        require.missing(f"test kubelet {why}")
    from tests.support.k8s_server import K8sServer

    with K8sServer(tls=True) as srv:
        srv.kubeconfig_path = srv.kubeconfig(tmp_path / "kubeconfig")
        yield srv
