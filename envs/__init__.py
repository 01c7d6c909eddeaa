"""Environments: every gymnax environment, plus our own whose return distribution is exact.

`envs.make(name, **param_overrides) -> (env, params)`; `envs.names()` lists what is valid.
"""

from envs import bandits, chains, mouse
from envs.registry import EnvError, make, names, own_names, register

for _exact_env in (
    mouse.VariableMagnitude,
    mouse.VariableProbability,
    chains.StochasticChain,
    chains.TerminalRewardChain,
    chains.GeometricSurvival,
    bandits.TwoArmedBandit,
    bandits.OneStepReward,
):
    register(_exact_env.env_name, _exact_env)
del _exact_env

__all__ = ["EnvError", "make", "names", "own_names", "register"]
