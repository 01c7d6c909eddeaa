"""The agent contract every distbench agent implements, and the small types agents speak.

An agent is a NamedTuple of pure functions over a pytree state (optax style); see docs/design.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp

from agents.coercion import CoercionError, coerce_fields


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
    it stay real branches under vmap. An agent that learns on a schedule declares it in its
    config (see `learning_schedule`); one that declares none learns from every transition.
    """

    init: Callable[..., Any]
    act: Callable[..., jnp.ndarray]
    update: Callable[..., tuple[Any, dict]]
    distribution: Callable[..., Atoms]
    greedy_values: Callable[..., jnp.ndarray]
    config: Any  # the frozen Config the agent was made from (gamma, ...)


class LearningSchedule(NamedTuple):
    """When an agent learns, in env steps of one seed."""

    starts: int  # env steps before the first learning step
    every: int  # env steps per learning step


def learning_schedule(config: Any) -> LearningSchedule:
    """The schedule an agent's config declares (`learning_starts`, `train_every`); without
    them, learning starts at once and each transition brings one learning step."""
    return LearningSchedule(
        starts=int(getattr(config, "learning_starts", 0)),
        every=int(getattr(config, "train_every", 1)),
    )


def build_config(
    config_cls: type, overrides: dict[str, Any] | None = None, *, what: str = "config"
):
    """Instantiate a frozen dataclass config from overrides (strings allowed, read by the rules
    of agents/coercion.py), then validate it.

    Raises ConfigError naming an unknown key (with the valid ones) or an ill-typed value.
    """
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(
            f"unknown {what} key {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    try:
        values = coerce_fields(config_cls, overrides)
    except CoercionError as err:
        raise ConfigError(str(err)) from None
    config = config_cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def require(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless condition holds: one line per impossible setting."""
    if not condition:
        raise ConfigError(message)
