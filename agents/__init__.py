"""Pure-function agents (DQN, C51, QR-DQN, IQN, EDRL, population TD) and the types they speak.

`agents.make(name, **config) -> Agent`; `agents.names()` lists what is valid.
"""

from __future__ import annotations

import importlib
from typing import Any

from agents.base import Agent, Atoms, ConfigError, EnvSpec, Transition, build_config

# name -> module; each module has a frozen `Config` dataclass and `make(config) -> Agent`.
_MODULES = {
    "dqn": "agents.dqn",
    "c51": "agents.c51",
    "qrdqn": "agents.qrdqn",
    "iqn": "agents.iqn",
    "edrl": "agents.edrl",
    "population_td": "agents.population_td",
}


def names() -> list[str]:
    return list(_MODULES)


def module(name: str):
    """The module implementing agent `name` (its `Config` and `make`)."""
    if name not in _MODULES:
        raise ConfigError(f"unknown agent {name!r}; valid: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name])


def make_config(name: str, **overrides: Any):
    """The validated Config of agent `name` with `overrides` (strings are parsed to field types)."""
    return build_config(module(name).Config, overrides, what=f"{name} config")


def make(name: str, **overrides: Any) -> Agent:
    """Build agent `name` from its default Config with `overrides` applied."""
    return module(name).make(make_config(name, **overrides))


__all__ = [
    "Agent",
    "Atoms",
    "ConfigError",
    "EnvSpec",
    "Transition",
    "make",
    "make_config",
    "module",
    "names",
]
