"""Keep the other ranks waiting while one rank sits at a breakpoint.

A rank held in the debugger stops joining collectives; past the process group's timeout the other ranks
fail inside the collective (gloo: "Timed out waiting Nms"; NCCL: the watchdog aborts the process) and the
launcher tears the whole job down. Under dbgfwd-rank the timeout of every process group the program
creates is raised to a debugging timeout, never lowered:

- `torch.distributed.distributed_c10d`'s group constructors (`init_process_group`, `new_group`,
  `split_group`, `new_subgroups*`; DeviceMesh, FSDP, DDP, Lightning and DeepSpeed build on them) get
  `timeout=max(the program's, the debugging timeout)`. Public arguments only.
- Groups that exist already when the guard is installed (torch imported before it) are raised through
  `_set_pg_timeout`, a private function: used only when present, and any failure is reported, not raised.
- The NCCL heartbeat monitor's timeout (`TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC`, documented) is raised the same
  way when the user has not set it.

torch is never imported here: the guard waits for the program to import torch.distributed (an import
hook), so a program without torch runs exactly as it would without dbgfwd.
"""

from __future__ import annotations

import functools
import importlib.abc
import inspect
import os
import sys
from datetime import timedelta
from typing import Callable

from dbgfwd import envvars

Log = Callable[[str], None]

C10D = "torch.distributed.distributed_c10d"
CREATORS = ("init_process_group", "new_group", "split_group", "new_subgroups", "new_subgroups_by_enumeration")
NCCL_HEARTBEAT_ENV = "TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC"
_WRAPPED = "__dbgfwd_collective_timeout__"
DEFAULT = envvars.COLLECTIVE_TIMEOUT_DEFAULT


class Guard:
    """Raises collective timeouts to `timeout`. `say` gets the one stderr notice, `log` the -v details."""

    def __init__(self, timeout: timedelta, say: Log, log: Log,
                 keep_hint: str = "--collective-timeout keep leaves the program's own"):
        self.timeout = timeout
        self._keep_hint = keep_hint
        self._say = say
        self._log = log
        self._said = False
        self.raised: list[str] = []  # what was changed, for tests and -v

    # -- installing --
    def install(self) -> None:
        module = sys.modules.get(C10D)
        if module is not None:
            self.patch(module)
            self.raise_existing(module)
        else:
            sys.meta_path.insert(0, _AfterImport(C10D, self._on_import))

    def _on_import(self, module) -> None:
        try:
            self.patch(module)
        except Exception as exc:  # never break the program's import of torch
            self._log(f"collective timeout guard not installed: {exc!r}")

    def patch(self, c10d) -> None:
        seconds = int(self.timeout.total_seconds())
        if os.environ.get(NCCL_HEARTBEAT_ENV) is None:
            os.environ[NCCL_HEARTBEAT_ENV] = str(max(seconds, 480))  # 480 s is torch's own default
        dist = sys.modules.get("torch.distributed")
        for name in CREATORS:
            original = getattr(c10d, name, None)
            if original is None or getattr(original, _WRAPPED, False):
                continue
            try:
                signature = inspect.signature(original)
            except (TypeError, ValueError):
                continue
            if "timeout" not in signature.parameters:
                self._log(f"{name} takes no timeout here; left as is")
                continue
            wrapped = self._wrap(name, original, signature)
            setattr(c10d, name, wrapped)
            # torch.distributed re-exports these; when it is already imported, its names point at the originals.
            if dist is not None and getattr(dist, name, None) is original:
                setattr(dist, name, wrapped)

    def _wrap(self, name: str, original: Callable, signature: inspect.Signature) -> Callable:
        @functools.wraps(original)
        def create_group(*args, **kwargs):
            try:
                bound = signature.bind_partial(*args, **kwargs)
            except TypeError:
                return original(*args, **kwargs)  # let torch report its own argument error
            given = bound.arguments.get("timeout")
            if given is None or (isinstance(given, timedelta) and given < self.timeout):
                bound.arguments["timeout"] = self.timeout
                self._note(name, given)
                return original(*bound.args, **bound.kwargs)
            return original(*args, **kwargs)

        setattr(create_group, _WRAPPED, True)
        return create_group

    def raise_existing(self, c10d) -> None:
        """Groups made before the guard was installed: raise them through the private setter, if any."""
        world = getattr(c10d, "_world", None)
        groups = list(getattr(world, "pg_map", {}) or {})
        if not groups:
            return
        setter = getattr(c10d, "_set_pg_timeout", None)
        if setter is None:
            self._say(f"{len(groups)} process group(s) were created before dbgfwd could raise their timeout; "
                      "a rank paused longer than their timeout makes the others fail")
            return
        for group in groups:
            current = _group_timeout(group)
            if current is not None and current >= self.timeout:
                continue  # never lower what the program chose
            try:
                setter(self.timeout, group)
                self._note("an existing process group", current)
            except Exception as exc:  # e.g. a backend without settable timeouts; the others still get it
                self._log(f"cannot raise the timeout of an existing process group: {exc!r}")

    def _note(self, what: str, given: object) -> None:
        was = "torch's default" if given is None else str(given)
        self.raised.append(f"{what}: {was} -> {self.timeout}")
        self._log(f"collective timeout of {what} raised from {was} to {self.timeout}")
        if not self._said:
            self._said = True
            self._say(f"collective timeouts raised to {format_timeout(self.timeout)} (from {was}) so that a rank "
                      f"paused in the debugger does not make the others time out; {self._keep_hint}")


def _group_timeout(group) -> timedelta | None:
    """The timeout a group's backend uses, where torch lets us read it (gloo and NCCL options); else None."""
    torch = sys.modules.get("torch")
    for device in ("cpu", "cuda"):
        try:
            value = group._get_backend(torch.device(device)).options._timeout
        except Exception:
            continue
        if isinstance(value, timedelta):
            return value
    return None


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `callback(module)` right after `name` has executed, before anyone imports names from it."""

    def __init__(self, name: str, callback: Callable):
        self.name = name
        self.callback = callback

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once; and so the lookup below finds the real spec
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find else None
            if spec is not None:
                break
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec  # nothing to hook: torch imports as usual, unguarded (said at -v)
        exec_module = loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            self.callback(module)

        loader.exec_module = exec_then_patch  # this module's own loader instance only
        return spec


def parse_timeout(text: str) -> timedelta | None:
    """`2h`, `90m`, `3600`, `3600s`, `1d` -> timedelta; `keep` (or 0) -> None. ValueError otherwise."""
    raw = text.strip().lower()
    if raw in ("keep", "off", "0"):
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    scale = units.get(raw[-1:], None)
    number = raw[:-1] if scale else raw
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 2h, 90m, 3600 or keep)") from None
    if value <= 0 or value != value or value > 365 * 86400:
        raise ValueError(f"not a usable duration: {text!r} (use e.g. 2h, 90m, 3600 or keep)")
    return timedelta(seconds=value)


def format_timeout(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
