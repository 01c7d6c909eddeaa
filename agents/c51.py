"""C51 (Bellemare, Dabney, Munos 2017): probabilities on a fixed support in [v_min, v_max],
trained by cross-entropy to the projected distributional Bellman target.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from agents import cpu_kernels, losses
from agents.base import Agent, Atoms, require
from agents.common import Algorithm, AtomsNetwork, ValueConfig, make_value_agent, online_target_loss


@dataclasses.dataclass(frozen=True)
class Config(ValueConfig):
    TRACED: ClassVar[tuple[str, ...]] = (*ValueConfig.TRACED, "v_min", "v_max")
    num_atoms: int = 51  # support size K
    v_min: float = 0.0  # lowest return on the support
    v_max: float = 100.0  # highest return on the support (CartPole's discounted max is < 100)

    def validate(self) -> None:
        super().validate()
        require(self.num_atoms >= 2, f"num_atoms={self.num_atoms} must be >= 2")
        require(self.v_min < self.v_max, f"v_min={self.v_min} must be < v_max={self.v_max}")

    @property
    def support(self) -> jnp.ndarray:
        """K evenly spaced returns from v_min to v_max (which may be traced): the fractions are
        constants, so no program divides by a per-seed value (see scale_by_adam_reciprocal)."""
        fractions = jnp.asarray(np.linspace(0.0, 1.0, self.num_atoms), jnp.float32)
        return self.v_min + (self.v_max - self.v_min) * fractions


def categorical_loss(config: Config, logits_tm1, a_tm1, r_t, discount_t, logits_t):
    """Mean over the batch of `losses.categorical_q_learning`; logits [B, A, K], others [B]."""
    per_example = cpu_kernels.select(
        config.kernels,
        jax.vmap(losses.categorical_q_learning, in_axes=(0, 0, 0, 0, 0, None)),
        cpu_kernels.categorical_q_learning,
    )
    discount_t = config.gamma * discount_t
    return jnp.mean(per_example(logits_tm1, a_tm1, r_t, discount_t, logits_t, config.support))


def make(config: Config) -> Agent:
    def network(num_actions):
        return AtomsNetwork(config.hidden_sizes, num_actions, config.num_atoms)

    loss = online_target_loss(categorical_loss)

    def distribution(config, net, params, obs):
        probs = jax.nn.softmax(net.apply(params, obs), axis=-1)
        return Atoms(jnp.broadcast_to(config.support, probs.shape), probs)

    def greedy_values(config, net, params, obs, key):
        return distribution(config, net, params, obs).mean()

    return make_value_agent(config, Algorithm(network, loss, greedy_values, distribution))
