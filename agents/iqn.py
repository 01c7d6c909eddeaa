"""IQN (Dabney et al. 2018b): a network theta(s, a, tau) for any tau in (0, 1), the tau's cosine
embedding multiplied into the torso features, trained by quantile Huber regression on sampled taus.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from agents import cpu_kernels
from agents.base import Agent, require
from agents.common import (
    MLP,
    Algorithm,
    ValueConfig,
    equal_weight_atoms,
    make_value_agent,
    midpoint_taus,
)
from agents.qrdqn import quantile_huber_losses


@dataclasses.dataclass(frozen=True)
class Config(ValueConfig):
    TRACED: ClassVar[tuple[str, ...]] = (*ValueConfig.TRACED, "huber_kappa")
    num_tau_samples: int = 8  # N: taus sampled for the online quantiles
    num_tau_prime_samples: int = 8  # N': taus sampled for the target quantiles
    num_quantile_samples: int = 32  # K: taus whose mean value ranks actions (an even grid)
    embedding_dim: int = 64  # cosine features cos(pi i tau), i = 0..embedding_dim-1
    huber_kappa: float = 1.0  # Huber threshold of the quantile loss
    num_distribution_quantiles: int = 51  # the even tau grid `distribution` reports

    def validate(self) -> None:
        super().validate()
        for name in (
            "num_tau_samples",
            "num_tau_prime_samples",
            "num_quantile_samples",
            "embedding_dim",
            "num_distribution_quantiles",
        ):
            value = getattr(self, name)
            require(value >= 1, f"{name}={value} must be >= 1")
        require(self.huber_kappa >= 0, f"huber_kappa={self.huber_kappa} must be >= 0")


def cosine_dense(taus, kernel, bias):
    """relu(cos(pi i tau) @ kernel + bias) for i < E: taus [..., T], kernel [E, d] -> [..., T, d];
    the tau embedding of the IQN paper. Taus get no gradient."""
    taus = jax.lax.stop_gradient(taus)
    features = jnp.cos(jnp.pi * jnp.arange(kernel.shape[0], dtype=taus.dtype) * taus[..., None])
    return nn.relu(features @ kernel + bias)


class CosineEmbedding(nn.Module):
    """taus [..., T] -> relu(Dense(width)(cos(pi i tau))) [..., T, width], as in the IQN paper."""

    width: int
    embedding_dim: int
    kernels: str = "auto"

    @nn.compact
    def __call__(self, taus):
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (self.embedding_dim, self.width)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.width,))
        return cpu_kernels.select(self.kernels, cosine_dense, cpu_kernels.cosine_dense)(
            taus, kernel, bias
        )


class ImplicitQuantileNetwork(nn.Module):
    """(obs [B, ...], taus [B, T] or [1, T]) -> quantile values [B, T, A].

    Three cheaper forms for what the agent needs (each tested equal to slicing the full one):
    * average_taus=True: the mean over the T taus, [B, A], from the mean tau feature: the head
      is affine, so mean_t head(f * e_t) = head(f * mean_t e_t). Ranking actions by the mean
      over K taus then costs one head evaluation per observation, not K.
    * actions [B]: the values at those actions only, [B, T]: sum_j e_tj (f_j w_ja) + b_a, one
      matrix-vector product per example over the [B, T, d] tau features instead of the head's
      matmul to A outputs (and its gradient) followed by a slice.
    * greedy_taus [1, K]: the values [B, T] at each observation's greedy action by the mean
      over greedy_taus (as with average_taus), sharing one torso evaluation.
    """

    hidden_sizes: tuple[int, ...]
    num_actions: int
    embedding_dim: int
    kernels: str = "auto"

    @nn.compact
    def __call__(self, obs, taus, average_taus: bool = False, actions=None, greedy_taus=None):
        features = MLP(self.hidden_sizes)(obs)  # [B, d]
        width = features.shape[-1]
        embedding = CosineEmbedding(
            width, self.embedding_dim, self.kernels
        )  # taus [B or 1, T] -> [.., T, d]
        kernel = self.param(
            "head_kernel", nn.initializers.lecun_normal(), (width, self.num_actions)
        )
        bias = self.param("head_bias", nn.initializers.zeros_init(), (self.num_actions,))

        def mean_values(taus):  # [B, A]
            return (features * jnp.mean(embedding(taus), axis=-2)) @ kernel + bias

        if average_taus:
            return mean_values(taus)
        if greedy_taus is not None:
            actions = jnp.argmax(mean_values(greedy_taus), axis=-1)
        if actions is None:
            return (features[:, None, :] * embedding(taus)) @ kernel + bias
        onehot = jax.nn.one_hot(actions, self.num_actions, dtype=features.dtype)  # [B, A]
        scaled = features * (onehot @ kernel.T)  # f_j w_ja, [B, d]
        # A batched matrix-vector product: XLA:CPU splits the equivalent multiply-and-sum over
        # d into slow windowed reductions.
        values = jnp.einsum("btj,bj->bt", embedding(taus), scaled)
        return values + (onehot @ bias)[:, None]


def iqn_loss(config: Config, z_tm1, taus_tm1, r_t, discount_t, z_t):
    """Quantile Huber loss, mean over the batch.

    z_tm1 [B, N] online values of the taken actions at taus_tm1 [B, N]; z_t [B, N'] target
    values of the greedy next actions at sampled taus.
    """
    target = r_t[:, None] + (config.gamma * discount_t)[:, None] * z_t  # [B, N']
    losses = quantile_huber_losses(config.kernels, z_tm1, taus_tm1, target, config.huber_kappa)
    return jnp.mean(losses)


def make(config: Config) -> Agent:
    greedy_taus = midpoint_taus(config.num_quantile_samples)
    distribution_taus = midpoint_taus(config.num_distribution_quantiles)

    def network(num_actions):
        return ImplicitQuantileNetwork(
            config.hidden_sizes, num_actions, config.embedding_dim, config.kernels
        )

    def greedy_values(config, net, params, obs, key):
        # The mean over K taus; an even grid is a lower-variance stand-in for K uniform draws.
        return net.apply(params, obs, greedy_taus[None], True)

    def loss(config, net, params, target_params, batch, key):
        online_key, target_key = jax.random.split(key)
        batch_size = batch.reward.shape[0]
        taus = jax.random.uniform(online_key, (batch_size, config.num_tau_samples))
        taus_prime = jax.random.uniform(target_key, (batch_size, config.num_tau_prime_samples))
        z_tm1 = net.apply(params, batch.obs, taus, actions=batch.action)  # [B, N]
        # Target: greedy next action by the mean over the K grid taus, valued at N' samples.
        z_t = net.apply(target_params, batch.next_obs, taus_prime, greedy_taus=greedy_taus[None])
        return iqn_loss(config, z_tm1, taus, batch.reward, batch.discount, z_t)

    def distribution(config, net, params, obs):
        values = net.apply(params, obs, distribution_taus[None])  # [B, T, A]
        return equal_weight_atoms(jnp.swapaxes(values, 1, 2))

    def init_inputs(obs, key):
        return obs, jax.random.uniform(key, (obs.shape[0], config.num_tau_samples))

    return make_value_agent(
        config, Algorithm(network, loss, greedy_values, distribution, init_inputs)
    )
