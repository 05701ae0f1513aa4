"""Start-up speed: typer (0.29) coerces every parameter through a pydantic TypeAdapter, and importing pydantic
and building those adapters costs ~100 ms on each command, `--help` included, even when every value is the
default dbgfwd itself declared. Declared defaults are trusted as they are (None, or already of the declared
plain type). A str, a flag, a number within its range or a path the user typed (or set in the environment) is
converted as typer would without pydantic (a path still gets typer's own checks and errors); any other value
still goes through typer's own coercion and its error messages. typer is pinned to 0.29.x (pyproject.toml), the
release this hooks into."""

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


def _plain_value(param, ctx, value):
    """A value the user typed, converted without pydantic where typer's own conversion is a plain one: a str
    kept as it is, a flag's bool, a number within its range, a path made a Path and then checked by typer's
    path rules (exists, dir_okay, ...), which raise typer's own errors. Anything else (a number out of range or
    not plainly written, choices, lists) returns _NOT_PLAIN and goes through typer's coercion, and its
    messages."""
    from pathlib import Path

    descriptor = getattr(param, "type_descriptor", None)
    info = getattr(descriptor, "parameter_info", None)
    if info is None or info.parser is not None or param.multiple or param.nargs != 1 \
            or getattr(descriptor, "choices", None) is not None:  # a choice is checked by typer
        return _NOT_PLAIN
    annotation = descriptor.annotation
    if annotation is str and type(value) is str:
        return value
    if annotation is bool and type(value) is bool:  # a flag the user gave
        return value
    if annotation in (int, float) and not info.clamp:
        number = _number(annotation, value)
        if number is not None and (info.min is None or number >= info.min) and \
                (info.max is None or number <= info.max):
            return number
        return _NOT_PLAIN  # out of range, or not plainly a number: typer's coercion says what is wrong
    if isinstance(annotation, type) and issubclass(annotation, Path) and type(value) is str \
            and info.path_type is None:
        from typer._param_types import coerce_cli_path

        return coerce_cli_path(annotation(value), info, path_type=annotation, param=param, ctx=ctx)
    return _NOT_PLAIN


_NOT_PLAIN = object()
_DIGITS = frozenset("0123456789")


def _number(annotation, value):
    """`value` as `annotation` (int or float) when it is plainly one: a count click made, or decimal digits
    (with one point for a float) as typed. None for anything else (signs, exponents, spaces, underscores...)."""
    if type(value) is annotation or (annotation is float and type(value) is int):
        return annotation(value)
    if type(value) is not str or not value or len(value) > 18:
        return None
    whole, point, fraction = value.partition(".")
    if not whole or not set(whole) <= _DIGITS or (point and (annotation is int or not fraction
                                                             or not set(fraction) <= _DIGITS)):
        return None
    return annotation(value)


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
            plain = _plain_value(self, ctx, value)
            if plain is _NOT_PLAIN:
                return coerce(self, ctx, value)
            value = plain
        if value is None and (self.multiple or self.nargs == -1):
            value = ()
        if self.required and self.value_is_missing(value):
            raise exceptions.MissingParameter(ctx=ctx, param=self)
        if self.callback is not None:
            value = self.callback(ctx, self, value)
        return value

    process_value.dbgfwd_fast = True  # type: ignore[attr-defined]
    _TyperParameter.process_value = process_value
