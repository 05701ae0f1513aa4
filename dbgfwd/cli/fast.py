"""Start-up speed: typer (0.29) coerces every parameter through a pydantic TypeAdapter, and importing pydantic
and building those adapters costs ~100 ms on each command, `--help` included, even when every value is the
default dbgfwd itself declared. Declared defaults are trusted as they are (None, or already of the declared
plain type); anything a user typed, or read from the environment, still goes through typer's own coercion
and its error messages. typer is pinned to 0.29.x (pyproject.toml), the release this hooks into."""

from __future__ import annotations

_PLAIN = (bool, int, float, str)


def _trusted_default(param, ctx, value) -> bool:
    from typer._click.core import ParameterSource

    if ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT:
        return False
    if value is None:
        return True
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    return annotation in _PLAIN and type(value) is annotation


def install() -> None:
    try:
        from typer._click import exceptions
        from typer.core import _TyperParameter
    except ImportError:  # another typer: its own coercion runs, only slower
        return
    coerce = _TyperParameter.process_value
    if getattr(coerce, "dbgfwd_fast", False):
        return

    def process_value(self, ctx, value):
        if not _trusted_default(self, ctx, value):
            return coerce(self, ctx, value)
        if value is None and (self.multiple or self.nargs == -1):
            value = ()
        if self.required and self.value_is_missing(value):
            raise exceptions.MissingParameter(ctx=ctx, param=self)
        if self.callback is not None:
            value = self.callback(ctx, self, value)
        return value

    process_value.dbgfwd_fast = True  # type: ignore[attr-defined]
    _TyperParameter.process_value = process_value
