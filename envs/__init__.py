"""Environments: every gymnax environment, plus our own whose return distribution is exact.

`envs.make(name, **param_overrides) -> (env, params)`; `envs.names()` lists what is valid.
"""

from envs.registry import EnvError, make, names, own_names, register

__all__ = ["EnvError", "make", "names", "own_names", "register"]
