"""Shell completion of option values where it is cheap: read local files only, never a server.

Each completer gets what the user typed so far and returns the candidates; it must never raise (a broken
kubeconfig must not break the user's shell) and never import an SDK.
"""

from __future__ import annotations

import configparser
import os
import re
from pathlib import Path


def _safe(fn):
    def wrapper(incomplete: str = "") -> list[str]:
        try:
            return sorted(c for c in fn() if c.startswith(incomplete or ""))
        except Exception:  # completion must never break the shell
            return []
    wrapper.__name__ = fn.__name__
    return wrapper


@_safe
def providers() -> list[str]:
    from dbgfwd.providers import REGISTRY

    return list(REGISTRY)


def _kubeconfig_text() -> str:
    paths = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    return "\n".join(Path(p).read_text(errors="replace") for p in paths.split(os.pathsep) if os.path.isfile(p))


def _kube_contexts() -> list[dict]:
    import json

    text = _kubeconfig_text()
    try:
        doc = json.loads(text)
    except ValueError:
        import yaml  # installed with the kubernetes client; only imported here, at completion time

        doc = yaml.safe_load(text)
    return [c for c in (doc or {}).get("contexts") or [] if isinstance(c, dict)]


@_safe
def kube_contexts() -> list[str]:
    return [str(c.get("name")) for c in _kube_contexts() if c.get("name")]


@_safe
def kube_namespaces() -> list[str]:
    """The namespaces the kubeconfig's contexts name (listing the cluster's would need a server call)."""
    return list({str((c.get("context") or {}).get("namespace")) for c in _kube_contexts()
                 if (c.get("context") or {}).get("namespace")})


@_safe
def aws_profiles() -> list[str]:
    path = os.environ.get("AWS_CONFIG_FILE") or str(Path.home() / ".aws" / "config")
    parser = configparser.ConfigParser()
    parser.read(path)
    return [s[len("profile "):] if s.startswith("profile ") else s for s in parser.sections()
            if s == "default" or s.startswith("profile ")]


@_safe
def ssh_hosts() -> list[str]:
    """Host aliases from ~/.ssh/config (no patterns)."""
    path = Path.home() / ".ssh" / "config"
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"\s*Host\s+(.+)", line, re.I)
        if m:
            out += [h for h in m.group(1).split() if not any(ch in h for ch in "*?!")]
    return out
