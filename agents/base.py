"""The agent contract every distbench agent implements, and the small types agents speak.

An agent is a NamedTuple of pure functions over a pytree state (optax style); see docs/design.md.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp


class ConfigError(ValueError):
    """A bad name or an impossible configuration value; the message names it and what is valid."""


class EnvSpec(NamedTuple):
    """All an agent knows of an environment."""

    observation_shape: tuple[int, ...]
    num_actions: int


class Atoms(NamedTuple):
    """A return distribution as weighted atoms: `locs` and `probs` share a shape [..., num_atoms]."""

    locs: jnp.ndarray
    probs: jnp.ndarray

    def mean(self) -> jnp.ndarray:
        return jnp.sum(self.locs * self.probs, axis=-1)


class Transition(NamedTuple):
    """A batch of environment transitions, leading axis = parallel envs."""

    obs: jnp.ndarray
    action: jnp.ndarray
    reward: jnp.ndarray
    discount: jnp.ndarray  # 0 where the episode terminated, else 1 (gamma is the agent's)
    next_obs: jnp.ndarray


class Agent(NamedTuple):
    """Pure functions over a pytree state.

    init(key, spec) -> state
    act(state, obs[B, ...], key, step, explore: bool) -> actions[B]
    update(state, transition (batch B), key, step) -> (state, metrics dict of scalars, with "loss")
    distribution(state, obs[B, ...]) -> Atoms with locs/probs [B, num_actions, num_atoms]
    greedy_values(state, obs[B, ...], key=None) -> [B, num_actions] what the greedy policy maximises

    `step` is the global env-step count, identical across vmapped seeds, so schedules built on
    it stay real branches under vmap.
    """

    init: Callable[..., Any]
    act: Callable[..., jnp.ndarray]
    update: Callable[..., tuple[Any, dict]]
    distribution: Callable[..., Atoms]
    greedy_values: Callable[..., jnp.ndarray]
    config: Any  # the frozen Config the agent was made from (gamma, ...)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Turn a `--set` string (or a Python value) into the field's declared type, or fail clearly."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        (item_type, *_rest) = typing.get_args(annotation) or (float,)
        if isinstance(value, str):
            parts = [p for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
        elif isinstance(value, (tuple, list)):
            parts = list(value)
        else:
            parts = [value]
        return tuple(_coerce(name, p, item_type) for p in parts)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            if option is type(None):
                if value is None or (isinstance(value, str) and value.lower() == "none"):
                    return None
                continue
            try:
                return _coerce(name, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{name}={value!r} has the wrong type ({annotation})")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no"):
            return False
        raise ConfigError(f"{name}={value!r} is not a boolean (use true or false)")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} is not an integer")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={value!r} is not an integer") from None
        if not as_float.is_integer():
            raise ConfigError(f"{name}={value!r} is not an integer")
        return int(as_float)
    if annotation is float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}={value!r} is not a number") from None
        # inf or NaN would train into NaN; refuse it here rather than record a diverged run.
        if not math.isfinite(number):
            raise ConfigError(f"{name}={value!r} is not a finite number")
        return number
    if annotation is str:
        return str(value)
    return value


def build_config(
    config_cls: type, overrides: dict[str, Any] | None = None, *, what: str = "config"
):
    """Instantiate a frozen dataclass config from overrides (strings allowed), then validate it.

    Raises ConfigError naming an unknown key (with the valid ones) or an ill-typed value.
    """
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {what} key {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(config_cls)
    values = {k: _coerce(k, v, hints.get(k, fields[k].type)) for k, v in overrides.items()}
    config = config_cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds: one line per impossible setting."""
    if not condition:
        raise ConfigError(message)
