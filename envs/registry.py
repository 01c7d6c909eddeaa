"""One registry for every environment distbench can run: gymnax's and our own exact ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnax

_OWN: dict[str, Callable[[], Any]] = {}


class EnvError(ValueError):
    """An unknown environment name or parameter; the message lists the valid ones."""


def register(name: str, factory: Callable[[], Any]) -> None:
    """Register our own gymnax-compatible env class (or factory) under `name`."""
    if name in _OWN or name in gymnax.registered_envs:
        raise EnvError(f"environment {name!r} is already registered")
    _OWN[name] = factory


def names() -> list[str]:
    """Every environment name `make` accepts: gymnax's registry, then ours."""
    return list(gymnax.registered_envs) + sorted(_OWN)


def own_names() -> list[str]:
    return sorted(_OWN)


def make(name: str, **param_overrides: Any):
    """Return (env, params) for `name`, with `params` fields replaced by `param_overrides`."""
    if name in _OWN:
        env = _OWN[name]()
        params = env.default_params
    elif name in gymnax.registered_envs:
        env, params = gymnax.make(name)
    else:
        raise EnvError(f"unknown environment {name!r}; valid: {', '.join(names())}")
    if param_overrides:
        fields = {f.name: f for f in dataclasses.fields(params)}
        unknown = sorted(set(param_overrides) - set(fields))
        if unknown:
            raise EnvError(
                f"unknown parameter {', '.join(unknown)} for {name}; valid: {', '.join(sorted(fields))}"
            )
        coerced = {}
        for key, value in param_overrides.items():
            current = getattr(params, key)
            coerced[key] = _coerce_like(name, key, value, current)
        params = params.replace(**coerced)
    validate = getattr(env, "validate_params", None)
    if validate is not None:
        validate(params)
    return env, params


def _coerce_like(env_name: str, key: str, value: Any, current: Any) -> Any:
    """Convert a string override to the type of the parameter's default value."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, tuple):
            parts = [p for p in value.strip("()[]").split(",") if p.strip()]
            kind = type(current[0]) if current else float
            return tuple(kind(p) for p in parts)
    except ValueError:
        raise EnvError(
            f"parameter {key}={value!r} of {env_name} is not a {type(current).__name__}"
        ) from None
    return value
