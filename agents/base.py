"""The agent contract every distbench agent implements, and the small types agents speak.

An agent is a NamedTuple of pure functions over a pytree state (optax style); see docs/design.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from agents.coercion import CoercionError, coerce_fields


class ConfigError(ValueError):
    """A bad name or an impossible configuration value; the message names it and what is valid."""


class EnvSpec(NamedTuple):
    """All an agent knows of an environment, and of how many copies feed it each step."""

    observation_shape: tuple[int, ...]
    num_actions: int
    # What holds an observation exactly (bool for MinAtar's 0/1 planes): what replay stores.
    observation_dtype: Any = jnp.float32
    num_envs: int = 1  # parallel envs whose transitions each update receives
    time_limit: int | None = None  # steps after which an episode is cut (None: never)


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

    init(key, spec, hparams=None) -> state; hparams: the config's traced hyperparameters as
        arrays (`hyperparams`), None for the config's own values. The state carries them.
    act(state, obs[B, ...], key, step, explore: bool) -> actions[B]
    update(state, transition (batch B), key, step) -> (state, metrics dict of scalars, with "loss")
    distribution(state, obs[B, ...]) -> Atoms with locs/probs [B, num_actions, num_atoms]
    greedy_values(state, obs[B, ...], key=None) -> [B, num_actions] what the greedy policy maximises

    The functions read every traced hyperparameter (`traced_fields`) from the state, never from
    the config, so one compiled program serves any values of them: a sweep vmaps over them as
    over seeds.

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


# --- traced hyperparameters ---------------------------------------------------------------------


def traced_fields(config: Any) -> tuple[str, ...]:
    """The numeric fields of `config` that its agent reads from the state as traced values (its
    class's TRACED): the ones that change no shape and no control flow of the program."""
    return tuple(getattr(type(config), "TRACED", ()))


def hyperparams(config: Any) -> dict[str, jnp.ndarray]:
    """The traced fields' values as 0-d arrays: int32 for integer fields, else float32."""
    out = {}
    for name in traced_fields(config):
        value = getattr(config, name)
        integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        out[name] = jnp.asarray(value, jnp.int32 if integer else jnp.float32)
    return out


def bind(config: Any, hparams: Mapping[str, Any] | None):
    """`config` with its traced fields replaced by `hparams` (traced arrays inside a program):
    what an agent's functions compute with. None leaves the config as it is.

    A field that is zero in `config` stays a Python zero: zero switches a form off (Huber kappa
    or delta 0: the plain loss), which the program then does not compute at all, and every seed
    of the program has it at zero (`static_config` keeps zero and nonzero apart)."""
    if not hparams:
        return config
    return dataclasses.replace(
        config, **{name: value for name, value in hparams.items() if getattr(config, name) != 0}
    )


def static_config(config: Any):
    """What of `config` shapes its program: everything but the traced values, of which only
    whether each is zero (see `bind`). Configs that differ only in traced nonzero values share
    one static config, hence one compiled program."""
    traced = set(traced_fields(config))
    canonical = {
        f.name: type(getattr(config, f.name))(getattr(config, f.name) != 0)
        for f in dataclasses.fields(config)
        if f.name in traced
    }
    return dataclasses.replace(config, **canonical) if canonical else config


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
