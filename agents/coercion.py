"""One reading of override values, for agent configs and environment parameters alike.

An override is text (`--set KEY=VALUE`, `--env-set KEY=VALUE`) or a Python value (a suite file's
TOML, a caller's keyword). It becomes the field's declared type by these rules:

* bool: True or False, or one of true, false, 1, 0 (any case), as text or as a value.
* int: an integer, or a number (text or value) with no fraction, such as 1e4; not a boolean.
* float: a finite number, as text or value; not a boolean; inf and nan are refused.
* str: any value, as its text.
* tuple[T, ...]: a tuple or list, or comma-separated text (brackets optional), each item by
  T's rule; a single value that is not text is a one-item tuple. tuple[T1, T2] needs 2 items.
* T | None: None or the text none (any case), else T's rule.
* anything else: a Python value as it is; text is refused (there is no rule to read it).

A value that fails its rule raises CoercionError naming the key, the value and what is valid.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from typing import Any

_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


class CoercionError(ValueError):
    """A value its field's type cannot be read from; the message names key, value and valid."""


def field_types(datacls: type) -> dict[str, Any]:
    """Each dataclass field's declared type, string annotations resolved where their module can."""
    try:
        return typing.get_type_hints(datacls)
    except (NameError, TypeError, AttributeError):  # an annotation its module cannot resolve
        return {field.name: field.type for field in dataclasses.fields(datacls)}


def coerce_fields(datacls: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` (keys already known to be fields of `datacls`) in their fields' types."""
    types_by_name = field_types(datacls)
    return {key: coerce(key, value, types_by_name[key]) for key, value in overrides.items()}


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """`value` read as `annotation` by the module's rules, or CoercionError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(key, value, annotation)
    if origin in (tuple, list):
        return _coerce_tuple(key, value, annotation)
    reader = _READERS.get(annotation)
    if reader is not None:
        return reader(key, value)
    if isinstance(value, str) and annotation not in (Any, object):
        raise CoercionError(
            f"{key}={value!r} cannot be given as text; valid: {describe(annotation)}"
        )
    return value


def describe(annotation: Any) -> str:
    """What `coerce` accepts for `annotation`, in words, for error messages."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return ", or ".join(describe(option) for option in typing.get_args(annotation))
    if origin in (tuple, list):
        items = _item_types(annotation) or (float,)
        if _fixed_length(annotation):
            return f"{len(items)} comma-separated values: {'; '.join(map(describe, items))}"
        return f"comma-separated values, each {describe(items[0])}"
    return _VALID.get(annotation, f"a value of type {_type_name(annotation)}, set in code")


def _fail(key: str, value: Any, what: str, annotation: Any) -> CoercionError:
    return CoercionError(f"{key}={value!r} is not {what}; valid: {describe(annotation)}")


def _read_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    # The text rule for values too: 1 and 0 pass, 1.0 ("1.0") and "yes" do not.
    text = str(value).strip().lower()
    if text not in _BOOL_TEXT:
        raise _fail(key, value, "a boolean", bool)
    return _BOOL_TEXT[text]


def _read_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise _fail(key, value, "an integer", int)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())  # exact, however large
        except ValueError:
            pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(key, value, "an integer", int) from None
    if not number.is_integer():  # also refuses inf and nan
        raise _fail(key, value, "an integer", int)
    return int(number)


def _read_float(key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _fail(key, value, "a number", float)
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _fail(key, value, "a number", float) from None
    # inf or NaN would train into NaN; refuse it here rather than record a diverged run.
    if not math.isfinite(number):
        raise _fail(key, value, "a finite number", float)
    return number


def _read_str(key: str, value: Any) -> str:
    del key
    return str(value)


_READERS = {bool: _read_bool, int: _read_int, float: _read_float, str: _read_str}
_VALID = {
    bool: "true, false, 1 or 0 (any case)",
    int: "a whole number such as 3 or 1e4",
    float: "a finite number such as 0.5 or 1e-3",
    str: "text",
    type(None): "none",
}


def _coerce_union(key: str, value: Any, annotation: Any) -> Any:
    for option in typing.get_args(annotation):
        if option is type(None):
            if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
                return None
            continue
        try:
            return coerce(key, value, option)
        except CoercionError:
            continue
    raise CoercionError(f"{key}={value!r} fits none of its types; valid: {describe(annotation)}")


def _coerce_tuple(key: str, value: Any, annotation: Any) -> tuple:
    if isinstance(value, str):
        text = value.strip().lstrip("([").rstrip(")]")
        items = [part.strip() for part in text.split(",") if part.strip()]
    elif isinstance(value, (tuple, list)):
        items = list(value)
    else:
        items = [value]
    item_types = _item_types(annotation) or (float,)
    if _fixed_length(annotation):
        if len(items) != len(item_types):
            raise CoercionError(
                f"{key}={value!r} has {len(items)} items; valid: {describe(annotation)}"
            )
    else:
        item_types = item_types[:1] * len(items)
    return tuple(
        coerce(f"{key}[{index}]", item, item_type)
        for index, (item, item_type) in enumerate(zip(items, item_types, strict=True))
    )


def _item_types(annotation: Any) -> tuple:
    """The item types of tuple[T, ...] (T,), of tuple[T1, T2] (T1, T2), of bare tuple ()."""
    return tuple(arg for arg in typing.get_args(annotation) if arg is not Ellipsis)


def _fixed_length(annotation: Any) -> bool:
    args = typing.get_args(annotation)
    return typing.get_origin(annotation) is tuple and bool(args) and Ellipsis not in args


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)
