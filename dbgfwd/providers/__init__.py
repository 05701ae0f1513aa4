"""Provider registry. Providers are imported lazily by name, so `dbgfwd --help` stays fast."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dbgfwd.errors import UsageError

if TYPE_CHECKING:
    from dbgfwd.providers.base import Provider

# name -> "module:Class". Add a provider here.
REGISTRY: dict[str, str] = {
    "local": "dbgfwd.providers.local:LocalProvider",
    "ssh": "dbgfwd.providers.ssh:SshProvider",
}


def names() -> list[str]:
    return list(REGISTRY)


def load(name: str) -> "type[Provider]":
    try:
        ref = REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown provider {name!r}",
            hint=f"choose one of: {', '.join(REGISTRY)}",
        ) from None
    module, _, cls = ref.partition(":")
    return getattr(importlib.import_module(module), cls)


def all_classes() -> "list[type[Provider]]":
    return [load(n) for n in REGISTRY]
