"""One registry for every environment distbench can run: gymnax's and our own exact ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnax
import jax.numpy as jnp

from agents.coercion import CoercionError, coerce_fields

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


# Envs whose observations gymnax declares float32 but which are only ever 0 or 1 (its MinAtar
# games build bool or 0/1 planes and cast them): stored as bool, a quarter of the bytes.
# tests/test_replay.py checks the values.
BINARY_OBSERVATIONS = (
    "Asterix-MinAtar",
    "Breakout-MinAtar",
    "Freeway-MinAtar",
    "SpaceInvaders-MinAtar",
)


def observation_dtype(env: Any, params: Any):
    """The dtype that holds `env`'s observations exactly: bool for BINARY_OBSERVATIONS, else
    the dtype its observation space declares."""
    if getattr(env, "name", None) in BINARY_OBSERVATIONS:
        return jnp.bool_
    return jnp.dtype(getattr(env.observation_space(params), "dtype", jnp.float32))


def make(name: str, **param_overrides: Any):
    """Return (env, params) for `name`, with `params` fields replaced by `param_overrides`
    (strings allowed, read as the fields' declared types by the rules of agents/coercion.py)."""
    if name in _OWN:
        env = _OWN[name]()
        params = env.default_params
    elif name in gymnax.registered_envs:
        env, params = gymnax.make(name)
    else:
        raise EnvError(f"unknown environment {name!r}; valid: {', '.join(names())}")
    if param_overrides:
        params = params.replace(**_coerced_params(name, params, param_overrides))
    validate = getattr(env, "validate_params", None)
    if validate is not None:
        validate(params)
    return env, params


def _coerced_params(name: str, params: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` in the types `params` declares, or EnvError naming the bad key or value."""
    fields = {f.name for f in dataclasses.fields(params)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise EnvError(
            f"unknown parameter {', '.join(unknown)} for {name}; valid: {', '.join(sorted(fields))}"
        )
    try:
        return coerce_fields(type(params), overrides)
    except CoercionError as err:
        raise EnvError(f"{name}: {err}") from None
