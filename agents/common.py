"""Parts every value-based agent shares: MLP torso, replay buffer, epsilon schedule, target sync,
and `make_value_agent`, which turns an algorithm's network, loss and distribution into an Agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from agents.base import Agent, Atoms, EnvSpec, Transition, bind, hyperparams, require
from agents.cpu_kernels import KERNELS
from agents.replay import Replay, replay_add, replay_init, replay_sample


@dataclasses.dataclass(frozen=True)
class ValueConfig:
    """Hyperparameters shared by every replay-based agent (defaults: PureJaxRL's CartPole DQN).

    All step counts are environment steps of one seed, summed over its parallel envs.
    The TRACED fields are read from the agent's state (see agents/base.py), so a sweep over them
    is one program; the others set shapes or the learning schedule (when gradient steps run: a
    per-seed schedule would make every seed compute every step's update) and stay static.
    """

    TRACED: ClassVar[tuple[str, ...]] = (
        "learning_rate",
        "adam_eps",
        "gamma",
        "target_period",
        "epsilon_start",
        "epsilon_end",
        "epsilon_steps",
        "eval_epsilon",
    )

    hidden_sizes: tuple[int, ...] = (120, 84)  # MLP torso widths
    learning_rate: float = 2.5e-4  # Adam step size
    adam_eps: float = 1e-8  # Adam epsilon (distributional papers use 0.01/batch_size)
    max_grad_norm: float = 0.0  # global-norm gradient clip; 0 disables it
    gamma: float = 0.99  # discount of the return the agent predicts
    buffer_size: int = 10_000  # replay capacity in transitions
    batch_size: int = 128  # transitions per gradient step
    learning_starts: int = 10_000  # env steps before the first gradient step
    train_every: int = 10  # env steps per gradient step
    target_period: int = 500  # env steps between hard target-network copies
    epsilon_start: float = 1.0  # exploration at step 0
    epsilon_end: float = 0.05  # exploration after the decay
    epsilon_steps: int = 250_000  # env steps of linear epsilon decay
    eval_epsilon: float = 0.0  # exploration of the greedy evaluation policy
    # Loss forms: "reference" (agents/losses.py), "cpu" (agents/cpu_kernels.py, equal values and
    # gradients, faster on XLA:CPU) or "auto": cpu where the program is lowered for the CPU.
    kernels: str = "auto"

    def validate(self) -> None:
        require(
            len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
            f"hidden_sizes={self.hidden_sizes} must be one or more positive widths",
        )
        require(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0")
        require(self.adam_eps > 0, f"adam_eps={self.adam_eps} must be > 0")
        require(self.max_grad_norm >= 0, f"max_grad_norm={self.max_grad_norm} must be >= 0")
        require(0.0 <= self.gamma <= 1.0, f"gamma={self.gamma} must be in [0, 1]")
        require(self.buffer_size >= 1, f"buffer_size={self.buffer_size} must be >= 1")
        require(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        require(self.learning_starts >= 0, f"learning_starts={self.learning_starts} must be >= 0")
        require(self.train_every >= 1, f"train_every={self.train_every} must be >= 1")
        require(self.target_period >= 1, f"target_period={self.target_period} must be >= 1")
        for name in ("epsilon_start", "epsilon_end", "eval_epsilon"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"{name}={value} must be in [0, 1]")
        require(self.epsilon_steps >= 0, f"epsilon_steps={self.epsilon_steps} must be >= 0")
        require(self.kernels in KERNELS, f"kernels={self.kernels!r} must be one of {KERNELS}")


class MLP(nn.Module):
    """The shared torso: flatten, then Dense + ReLU per width."""

    hidden_sizes: tuple[int, ...]

    @nn.compact
    def __call__(self, obs: jnp.ndarray) -> jnp.ndarray:
        x = obs.reshape(obs.shape[0], -1).astype(jnp.float32)
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width)(x))
        return x


# --- schedules ----------------------------------------------------------------------------------


def linear_epsilon(config: ValueConfig, step: jnp.ndarray) -> jnp.ndarray:
    """Epsilon decayed linearly from epsilon_start to epsilon_end over epsilon_steps env steps
    (any of them may be traced). A product with the reciprocal, not a divide by the per-seed
    value: see scale_by_adam_reciprocal."""
    decay_steps = jnp.asarray(config.epsilon_steps)
    frac = jnp.clip(step * (1.0 / jnp.maximum(decay_steps, 1)), 0.0, 1.0)
    frac = jnp.where(decay_steps == 0, 1.0, frac)
    return config.epsilon_start + frac * (config.epsilon_end - config.epsilon_start)


def crossings(step: jnp.ndarray, batch: int, period) -> jnp.ndarray:
    """How many multiples of `period` the env-step counter passes going from step to step+batch."""
    return (step + batch) // period - step // period


def epsilon_greedy(key: jax.Array, values: jnp.ndarray, epsilon: jnp.ndarray) -> jnp.ndarray:
    """Per row of values [B, A]: the argmax, or with probability epsilon a uniform action."""
    explore_key, action_key = jax.random.split(key)
    greedy = jnp.argmax(values, axis=-1)
    random_actions = jax.random.randint(action_key, greedy.shape, 0, values.shape[-1])
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, random_actions, greedy)


# --- the generic replay agent -------------------------------------------------------------------


@struct.dataclass
class ValueState:
    params: Any
    target_params: Any
    opt_state: Any
    replay: Replay
    num_updates: jnp.ndarray
    hparams: dict  # the traced hyperparameters (agents/base.py), 0-d arrays
    num_actions: int = struct.field(pytree_node=False)


class Algorithm(NamedTuple):
    """What distinguishes one value-based agent from another.

    network(num_actions) -> nn.Module mapping (obs [B, ...], *extra) to the algorithm's outputs.
    loss(config, network, params, target_params, batch, key) -> scalar mean loss over the batch.
    greedy_values(config, network, params, obs, key) -> [B, A] values whose argmax is the greedy
        action.
    distribution(config, network, params, obs) -> Atoms [B, A, n].
    `config` is the agent's config bound to the state's traced hyperparameters.
    init_inputs(obs [1, ...], key) -> the tuple of arguments for `network.init`.
    """

    network: Callable[[int], nn.Module]
    loss: Callable[..., jnp.ndarray]
    greedy_values: Callable[..., jnp.ndarray]
    distribution: Callable[..., Atoms]
    init_inputs: Callable[..., tuple] = lambda obs, key: (obs,)


def online_target_loss(loss_fn: Callable[..., jnp.ndarray]):
    """Algorithm.loss for heads scored by loss_fn(config, out_tm1, a_tm1, r_t, discount_t, out_t):
    online outputs at obs against target-network outputs at next_obs (DQN, C51, QR-DQN, EDRL)."""

    def loss(config, network, params, target_params, batch, key):
        del key
        out_tm1 = network.apply(params, batch.obs)
        out_t = network.apply(target_params, batch.next_obs)
        return loss_fn(config, out_tm1, batch.action, batch.reward, batch.discount, out_t)

    return loss


def scale_by_adam_reciprocal(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """optax.scale_by_adam with its bias corrections applied as products with their reciprocals.

    optax divides the moments by 1 - b^t, a per-seed scalar under vmap. XLA rewrites such a
    divide by a broadcast scalar into a product with its reciprocal in some pipelines (a one-device
    program) and not in others (a sharded one), which round differently: a seed would train to
    other numbers on one device than on two. Writing the product keeps both pipelines alike.
    """

    def init(params):
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
        )

    def update(updates, state, params=None):
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        mu_scale = 1.0 / (1.0 - b1 ** count.astype(jnp.float32))
        nu_scale = 1.0 / (1.0 - b2 ** count.astype(jnp.float32))
        updates = jax.tree.map(lambda m, v: (m * mu_scale) / (jnp.sqrt(v * nu_scale) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def adam(learning_rate, eps) -> optax.GradientTransformation:
    """Adam (optax.adam's defaults b1 = 0.9, b2 = 0.999), device-count independent."""
    return optax.chain(scale_by_adam_reciprocal(eps=eps), optax.scale(-learning_rate))


def optimiser(config: ValueConfig) -> optax.GradientTransformation:
    """Global-norm clipping (max_grad_norm > 0), then Adam; learning rate and eps may be traced
    (the optimiser's state does not depend on them). Clipping stays static, a part of the
    program: computing the norm where it is off changed how XLA fused the gradients, and with
    it their rounding, differently on one device and on two."""
    adam_step = adam(config.learning_rate, eps=config.adam_eps)
    if config.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.max_grad_norm), adam_step)
    return optax.chain(adam_step)


def make_value_agent(config: ValueConfig, algorithm: Algorithm) -> Agent:
    """Replay, epsilon-greedy acting, Adam and hard target syncs around an algorithm's loss.
    Every traced hyperparameter is read from the state (`bound`), never from `config`."""

    def bound(state: ValueState) -> ValueConfig:
        return bind(config, state.hparams)

    def init(key: jax.Array, spec: EnvSpec, hparams=None) -> ValueState:
        network = algorithm.network(spec.num_actions)
        init_key, input_key = jax.random.split(key)
        dummy_obs = jnp.zeros((1, *spec.observation_shape), jnp.float32)
        params = network.init(init_key, *algorithm.init_inputs(dummy_obs, input_key))
        replay = replay_init(
            config.buffer_size,
            spec.observation_shape,
            spec.observation_dtype,
            spec.num_envs,
            spec.time_limit,
        )
        return ValueState(
            params=params,
            target_params=params,
            opt_state=optimiser(config).init(params),
            replay=replay,
            num_updates=jnp.zeros((), jnp.int32),
            hparams=hyperparams(config) if hparams is None else dict(hparams),
            num_actions=spec.num_actions,
        )

    def greedy_values(state: ValueState, obs: jnp.ndarray, key: jax.Array | None = None):
        network = algorithm.network(state.num_actions)
        key = jax.random.PRNGKey(0) if key is None else key
        return algorithm.greedy_values(bound(state), network, state.params, obs, key)

    def act(state: ValueState, obs, key, step, explore: bool = True):
        value_key, action_key = jax.random.split(key)
        values = greedy_values(state, obs, value_key)
        hp = bound(state)
        epsilon = linear_epsilon(hp, step) if explore else hp.eval_epsilon
        return epsilon_greedy(action_key, values, epsilon)

    def loss_fn(params, target_params, batch, key, state: ValueState):
        network = algorithm.network(state.num_actions)
        return algorithm.loss(bound(state), network, params, target_params, batch, key)

    def learn_once(state: ValueState, key: jax.Array) -> tuple[ValueState, jnp.ndarray]:
        sample_key, loss_key = jax.random.split(key)
        batch = replay_sample(state.replay, sample_key, config.batch_size)
        loss, grads = jax.value_and_grad(loss_fn)(
            state.params, state.target_params, batch, loss_key, state
        )
        updates, opt_state = optimiser(bound(state)).update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(params=params, opt_state=opt_state, num_updates=state.num_updates + 1)
        return state, loss

    def update(state: ValueState, transition: Transition, key: jax.Array, step):
        """Store the batch, then take the gradient steps and target syncs the schedule asks for.

        `step` is unbatched under vmap, so the learning cond is a real branch; the target sync's
        period is a traced hyperparameter, so under vmap its cond is a select of parameters.
        """
        num_envs = transition.reward.shape[0]
        state = state.replace(replay=replay_add(state.replay, transition, step))
        num_learn = jnp.where(
            step + num_envs > config.learning_starts,
            crossings(step, num_envs, config.train_every),
            0,
        )

        def body(i, carry):
            learn_state, loss_sum = carry
            learn_state, loss = learn_once(learn_state, jax.random.fold_in(key, i))
            return learn_state, loss_sum + loss

        def learn(state):
            # With train_every >= num_envs there is at most one step: skip the while loop.
            if -(-num_envs // config.train_every) == 1:
                return learn_once(state, key)
            return jax.lax.fori_loop(0, num_learn, body, (state, jnp.zeros((), jnp.float32)))

        state, loss_sum = jax.lax.cond(
            num_learn > 0, learn, lambda s: (s, jnp.zeros((), jnp.float32)), state
        )
        hp = bound(state)
        state = jax.lax.cond(
            crossings(step, num_envs, hp.target_period) > 0,
            lambda s: s.replace(target_params=s.params),
            lambda s: s,
            state,
        )
        metrics = {
            "loss": loss_sum / jnp.maximum(num_learn, 1),
            "learned": (num_learn > 0).astype(jnp.float32),
            "epsilon": linear_epsilon(hp, step),
        }
        return state, metrics

    def distribution(state: ValueState, obs):
        network = algorithm.network(state.num_actions)
        return algorithm.distribution(bound(state), network, state.params, obs)

    return Agent(
        init=init,
        act=act,
        update=update,
        distribution=distribution,
        greedy_values=greedy_values,
        config=config,
    )


# --- shared by the quantile and expectile agents --------------------------------------------------


def midpoint_taus(num: int) -> jnp.ndarray:
    """The levels tau_i = (2i - 1) / (2 num), i = 1..num: an even grid of (0, 1)."""
    return (2.0 * jnp.arange(1, num + 1) - 1.0) / (2.0 * num)


def equal_weight_atoms(values: jnp.ndarray) -> Atoms:
    """Atoms at `values` [..., K], each with probability 1/K (quantiles, imputed samples)."""
    return Atoms(values, jnp.full_like(values, 1.0 / values.shape[-1]))


class AtomsNetwork(nn.Module):
    """Torso, then num_actions x num_outputs values per observation: [B, A, K]."""

    hidden_sizes: tuple[int, ...]
    num_actions: int
    num_outputs: int

    @nn.compact
    def __call__(self, obs):
        out = nn.Dense(self.num_actions * self.num_outputs)(MLP(self.hidden_sizes)(obs))
        return out.reshape(obs.shape[0], self.num_actions, self.num_outputs)
