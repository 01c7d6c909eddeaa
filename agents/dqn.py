"""DQN (Mnih et al. 2015): one Q value per action, a point-mass return distribution."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import rlax

from agents import losses
from agents.base import Agent, Atoms, require
from agents.common import MLP, Algorithm, ValueConfig, make_value_agent, online_target_loss


@dataclasses.dataclass(frozen=True)
class Config(ValueConfig):
    TRACED: ClassVar[tuple[str, ...]] = (*ValueConfig.TRACED, "huber_delta")
    huber_delta: float = 0.0  # 0: squared TD error (PureJaxRL); > 0: Huber loss with this delta

    def validate(self) -> None:
        super().validate()
        require(self.huber_delta >= 0, f"huber_delta={self.huber_delta} must be >= 0")


class QNetwork(nn.Module):
    hidden_sizes: tuple[int, ...]
    num_actions: int

    @nn.compact
    def __call__(self, obs):
        return nn.Dense(self.num_actions)(MLP(self.hidden_sizes)(obs))


def td_loss(config: Config, q_tm1, a_tm1, r_t, discount_t, q_t) -> jnp.ndarray:
    """Mean over the batch of the (Huber or squared) Q-learning TD error; inputs [B, A] / [B].
    huber_delta is a Python zero (squared error: `bind` keeps a zero static) or a positive
    value, possibly traced."""
    td = jax.vmap(losses.q_learning)(q_tm1, a_tm1, r_t, config.gamma * discount_t, q_t)
    if not isinstance(config.huber_delta, jax.Array) and config.huber_delta == 0:
        return jnp.mean(jnp.square(td))
    return jnp.mean(rlax.huber_loss(td, config.huber_delta))


def make(config: Config) -> Agent:
    def network(num_actions):
        return QNetwork(config.hidden_sizes, num_actions)

    loss = online_target_loss(td_loss)

    def greedy_values(config, net, params, obs, key):
        return net.apply(params, obs)

    def distribution(config, net, params, obs):
        q = net.apply(params, obs)
        return Atoms(q[..., None], jnp.ones_like(q)[..., None])

    return make_value_agent(config, Algorithm(network, loss, greedy_values, distribution))
