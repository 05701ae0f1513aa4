"""Provider registry: name -> class, loaded by name.

Provider modules import their SDKs (kubernetes, boto3, paramiko) only when used, so loading a provider
class is cheap; the CLI loads every class to build the provider options of attach/ls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from dbgfwd.errors import UsageError

if TYPE_CHECKING:
    from dbgfwd.providers.base import Provider

# name -> "module:Class". Add a provider here.
REGISTRY: dict[str, str] = {
    "local": "dbgfwd.providers.local.provider:LocalProvider",
    "ssh": "dbgfwd.providers.ssh.provider:SshProvider",
    "batch": "dbgfwd.providers.batch.provider:BatchProvider",
    "kubernetes": "dbgfwd.providers.kubernetes.provider:KubernetesProvider",
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


def all_options() -> "list[tuple[str, str, tuple]]":
    """(name, title, options) of every provider, for the CLI. Read from `<package>/options.py` beside a
    provider module named `<package>.provider` (data only), so that building the CLI imports no provider;
    a provider registered some other way (tests) is loaded for its class attributes."""
    out = []
    for name, ref in REGISTRY.items():
        module = ref.partition(":")[0]
        if module.endswith(".provider"):
            light = importlib.import_module(module[: -len("provider")] + "options")
            out.append((name, light.TITLE, light.OPTIONS))
        else:
            cls = load(name)
            out.append((name, cls.title, cls.options))
    return out


def _reject_foreign_options(cls: "type[Provider]", config) -> None:
    """An option of another provider given with --provider NAME is a mistake (`--provider ssh -l alice`
    meant a login name, not a label selector): say so instead of ignoring it."""
    own = {o.key for o in cls.options}
    for other, _title, options in all_options():  # the options alone: no other provider is loaded for this
        if other == cls.name:
            continue
        for opt in options:
            if opt.key in own or config.options.get(opt.key) in (None, (), False):
                continue
            raise UsageError(f"{'/'.join(opt.flags)} is an option of the {other} provider; the {cls.name} "
                             "provider does not use it",
                             hint=f"drop it, or see `dbgfwd attach --help` for the {cls.name} options")


def choose(name: str | None, config) -> "type[Provider]":
    """The provider named, else the one the user's options/targets clearly mean, else `local`."""
    from dbgfwd.errors import ProviderUnavailable

    if name:
        cls = load(name)
        _reject_foreign_options(cls, config)
    else:
        claimed = [c for c in all_classes() if c.claims(config)]
        if len(claimed) > 1:
            raise UsageError(f"the options given fit several providers ({', '.join(c.name for c in claimed)})",
                             hint="say which with --provider")
        if claimed:
            cls = claimed[0]
        elif config.targets:
            raise UsageError(f"cannot tell which provider reaches {config.targets[0]!r}",
                             hint=f"pass --provider ({', '.join(REGISTRY)})")
        else:
            cls = load("local")
    avail = cls.availability()
    if not avail.ok:
        raise ProviderUnavailable(f"the {cls.name} provider cannot run here: {avail.reason}")
    return cls
