"""The kubernetes provider's command-line options (read by the CLI without importing the provider)."""

from __future__ import annotations

from dbgfwd.providers.option import ProviderOption

TITLE = "Kubernetes / OpenShift"
OPTIONS = (
    ProviderOption("namespace", ("-n", "--namespace"), "namespace (OpenShift project) of the pods; "
                   "default: the kubeconfig context's", metavar="NS", complete="kube_namespaces"),
    ProviderOption("context", ("--context",), "kubeconfig context to use", metavar="NAME", complete="kube_contexts"),
    ProviderOption("kubeconfig", ("--kubeconfig",), "kubeconfig file (default: $KUBECONFIG, "
                   "~/.kube/config)", metavar="PATH"),
    ProviderOption("selector", ("-l", "--selector"), "label selector for the pods, e.g. app=train",
                   metavar="SEL"),
    ProviderOption("container", ("--container",), "container the ranks run in (default: the pod's "
                   "default container)", metavar="NAME"),
    ProviderOption("ranks_per_pod", ("--ranks-per-pod",), "ranks per pod (default: read the rank "
                   "markers through exec)", type=int, metavar="N", min=1),
)
