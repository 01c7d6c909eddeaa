"""QR-DQN (Dabney et al. 2018a): K quantile values per action at tau_i = (2i - 1) / 2K,
trained by quantile Huber regression (`losses.quantile_q_learning`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from agents import cpu_kernels, losses
from agents.base import Agent, require
from agents.common import (
    Algorithm,
    AtomsNetwork,
    ValueConfig,
    equal_weight_atoms,
    make_value_agent,
    midpoint_taus,
    online_target_loss,
)


@dataclasses.dataclass(frozen=True)
class Config(ValueConfig):
    TRACED: ClassVar[tuple[str, ...]] = (*ValueConfig.TRACED, "huber_kappa")
    num_quantiles: int = 51  # K quantiles per action
    huber_kappa: float = 1.0  # Huber threshold of the quantile loss; 0 gives the plain QR loss

    def validate(self) -> None:
        super().validate()
        require(self.num_quantiles >= 1, f"num_quantiles={self.num_quantiles} must be >= 1")
        require(self.huber_kappa >= 0, f"huber_kappa={self.huber_kappa} must be >= 0")


def quantile_huber_losses(kernels: str, src, taus, target, kappa):
    """Per-example `losses.quantile_huber_loss` [B] for src, taus [B, K] and target [B, M], in
    the form `kernels` selects (shared by QR-DQN and IQN)."""
    reference = jax.vmap(losses.quantile_huber_loss, in_axes=(0, 0, 0, None))
    return cpu_kernels.select(
        kernels,
        lambda s, t, z: reference(s, t, z, kappa),
        lambda s, t, z: cpu_kernels.quantile_huber_loss(s, t, z, kappa),
    )(src, taus, target)


def quantile_loss(config: Config, q_tm1, a_tm1, r_t, discount_t, q_t) -> jnp.ndarray:
    """Mean over the batch of `losses.quantile_q_learning`; quantiles [B, A, K], others [B]."""
    taus = jnp.broadcast_to(midpoint_taus(config.num_quantiles), q_tm1[:, 0].shape)
    a_t = jnp.argmax(jnp.mean(q_t, axis=-1), axis=-1)
    target = r_t[:, None] + (config.gamma * discount_t)[:, None] * losses.at_actions(q_t, a_t)
    chosen = losses.at_actions(q_tm1, a_tm1)
    return jnp.mean(quantile_huber_losses(config.kernels, chosen, taus, target, config.huber_kappa))


def make(config: Config) -> Agent:
    def network(num_actions):
        return AtomsNetwork(config.hidden_sizes, num_actions, config.num_quantiles)

    loss = online_target_loss(quantile_loss)

    def distribution(config, net, params, obs):
        return equal_weight_atoms(net.apply(params, obs))

    def greedy_values(config, net, params, obs, key):
        return jnp.mean(net.apply(params, obs), axis=-1)

    return make_value_agent(config, Algorithm(network, loss, greedy_values, distribution))
