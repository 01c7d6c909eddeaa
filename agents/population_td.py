"""Tabular population TD model of dopamine neurons (Dabney et al. 2020): N value predictors with
their own positive and negative learning rates; expectile, quantile and classical variants.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from agents.base import Agent, Atoms, EnvSpec, require
from agents.imputation import impute_samples

VARIANTS = ("expectile", "quantile", "classical")
BOOTSTRAPS = ("impute", "sample")
# Per-cell overall learning rates are log-normal, truncated at this many SDs, so validation can
# guarantee that no expectile rate exceeds 1 (a larger step would overshoot its target).
_RATE_TRUNCATION_SDS = 2.0


@dataclasses.dataclass(frozen=True)
class Config:
    """A simulated population (one animal per PRNG key)."""

    variant: str = "expectile"  # expectile: f(delta) = delta; quantile: sign; classical: one rate
    num_cells: int = 40
    num_states: int = 1  # tabular states; one-reward-per-trial tasks need only the reward state
    # Mean of (alpha+ + alpha-) / 2 over cells; for "quantile" it is a step in reward units.
    learning_rate: float = 0.01
    learning_rate_spread: float = 0.0  # SD of log overall rate across cells (truncated at 2 SDs)
    asymmetry_low: float = 0.05  # tau_i = alpha+ / (alpha+ + alpha-) ~ Uniform(low, high)
    asymmetry_high: float = 0.95
    alpha_plus: tuple[float, ...] | None = None  # explicit per-cell rates override the draws
    alpha_minus: tuple[float, ...] | None = None
    gamma: float = 1.0  # discount between the steps of a trial
    # Next-state value for multi-step TD: "impute" (expectile cells regress on samples imputed
    # from the next state's expectiles; quantile cells' values already are samples) or "sample"
    # (another cell's value taken as a sample: biased for expectiles).
    bootstrap: str = "impute"
    imputation_iterations: int = 8
    response_noise: float = 0.0  # SD of Gaussian noise on each recorded response
    num_trials: int = 20_000
    averaging_trials: int = 5_000  # final trials whose values are averaged for the analysis
    initial_value: float = 0.0

    def validate(self) -> None:
        require(self.variant in VARIANTS, f"variant={self.variant!r}; valid: {', '.join(VARIANTS)}")
        require(
            self.bootstrap in BOOTSTRAPS,
            f"bootstrap={self.bootstrap!r}; valid: {', '.join(BOOTSTRAPS)}",
        )
        require(self.num_cells >= 1, f"num_cells={self.num_cells} must be >= 1")
        require(self.num_states >= 1, f"num_states={self.num_states} must be >= 1")
        require(self.learning_rate > 0, f"learning_rate={self.learning_rate} must be > 0")
        require(
            self.learning_rate_spread >= 0,
            f"learning_rate_spread={self.learning_rate_spread} must be >= 0",
        )
        require(
            0 < self.asymmetry_low <= self.asymmetry_high < 1,
            f"need 0 < asymmetry_low <= asymmetry_high < 1, got "
            f"{self.asymmetry_low}, {self.asymmetry_high}",
        )
        require(0 <= self.gamma <= 1, f"gamma={self.gamma} must be in [0, 1]")
        require(
            self.imputation_iterations >= 1,
            f"imputation_iterations={self.imputation_iterations} must be >= 1",
        )
        require(self.response_noise >= 0, f"response_noise={self.response_noise} must be >= 0")
        require(self.num_trials >= 1, f"num_trials={self.num_trials} must be >= 1")
        require(
            1 <= self.averaging_trials <= self.num_trials,
            f"averaging_trials={self.averaging_trials} must be in [1, num_trials]",
        )
        explicit = (self.alpha_plus is not None, self.alpha_minus is not None)
        require(explicit[0] == explicit[1], "give both alpha_plus and alpha_minus, or neither")
        # Quantile steps are in reward units; the other variants move a fraction of the error.
        rate_cap = float("inf") if self.variant == "quantile" else 1.0
        if explicit[0]:
            require(
                self.variant != "classical",
                "the classical variant has one shared learning_rate; drop alpha_plus/alpha_minus",
            )
            for name, rates in (("alpha_plus", self.alpha_plus), ("alpha_minus", self.alpha_minus)):
                require(
                    len(rates) == self.num_cells,
                    f"{name} has {len(rates)} rates for num_cells={self.num_cells}",
                )
                require(
                    all(0 < a <= rate_cap for a in rates),
                    f"{name} rates must be in (0, {rate_cap}] for the {self.variant} variant",
                )
        else:
            largest = (
                2 * self.learning_rate * math.exp(_RATE_TRUNCATION_SDS * self.learning_rate_spread)
            )
            if self.variant == "classical":
                largest = self.learning_rate
            require(
                largest <= rate_cap,
                f"learning_rate={self.learning_rate} with spread {self.learning_rate_spread} "
                f"allows rates up to {largest:.3g} > {rate_cap} for the {self.variant} "
                "variant",
            )


class PopulationState(NamedTuple):
    """One animal's population: values [num_states, num_cells], rates [num_cells]."""

    values: jnp.ndarray
    alpha_plus: jnp.ndarray
    alpha_minus: jnp.ndarray


class Trial(NamedTuple):
    """One trial's steps, [T] each: step t goes from states[t] to states[t + 1] (the last step
    ends the trial) and brings rewards[t]."""

    states: jnp.ndarray
    rewards: jnp.ndarray


def init(config: Config, key: jax.Array) -> PopulationState:
    """Draws each cell's learning rates (one animal per key) and sets every value to the initial."""
    shape = (config.num_cells,)
    if config.alpha_plus is not None:
        alpha_plus = jnp.asarray(config.alpha_plus, jnp.float32)
        alpha_minus = jnp.asarray(config.alpha_minus, jnp.float32)
    elif config.variant == "classical":
        alpha_plus = alpha_minus = jnp.full(shape, config.learning_rate, jnp.float32)
    else:
        asymmetry_key, rate_key = jax.random.split(key)
        asymmetry = jax.random.uniform(
            asymmetry_key, shape, minval=config.asymmetry_low, maxval=config.asymmetry_high
        )
        log_spread = config.learning_rate_spread * jax.random.truncated_normal(
            rate_key, -_RATE_TRUNCATION_SDS, _RATE_TRUNCATION_SDS, shape
        )
        rate = config.learning_rate * jnp.exp(log_spread)
        alpha_plus, alpha_minus = 2 * rate * asymmetry, 2 * rate * (1 - asymmetry)
    values = jnp.full((config.num_states, config.num_cells), config.initial_value, jnp.float32)
    return PopulationState(values, alpha_plus, alpha_minus)


def asymmetries(state: PopulationState) -> jnp.ndarray:
    """tau_i = alpha_i+ / (alpha_i+ + alpha_i-), [num_cells]: the level each cell converges to."""
    return state.alpha_plus / (state.alpha_plus + state.alpha_minus)


def scaled_errors(state: PopulationState, errors: jnp.ndarray) -> jnp.ndarray:
    """alpha_i+ delta where delta > 0, else alpha_i- delta; errors [num_cells, ...]."""
    extra = (slice(None),) + (None,) * (errors.ndim - 1)
    return jnp.where(errors > 0, state.alpha_plus[extra], state.alpha_minus[extra]) * errors


def next_state_samples(
    config: Config, state: PopulationState, next_state: jnp.ndarray, key: jax.Array
) -> jnp.ndarray:
    """A sample of the next state's value for each cell, [num_cells] (docs/science.md section 2)."""
    values = state.values[next_state]
    if config.bootstrap == "impute" and config.variant == "expectile":
        values = impute_samples(
            values, asymmetries(state), num_iterations=config.imputation_iterations
        )
    # Each cell draws its own sample from the next state's population (or imputed samples).
    return values[jax.random.randint(key, (config.num_cells,), 0, values.shape[0])]


def td_step(
    config: Config,
    state: PopulationState,
    current: jnp.ndarray,
    reward: jnp.ndarray,
    discount: jnp.ndarray,
    next_value: jnp.ndarray,
) -> PopulationState:
    """V_i(x) <- V_i(x) + alpha_i^+- f(delta_i), delta_i = r + discount * next_value_i - V_i(x).

    current: state index x (scalar int); next_value: [num_cells] (ignored where discount is 0).
    """
    errors = reward + discount * next_value - state.values[current]
    if config.variant == "quantile":
        errors = jnp.sign(errors)
    # The row written by a one-hot select, not a scatter-add (atomics on a GPU): the table is small.
    row = jnp.arange(state.values.shape[0])[:, None] == current
    values = jnp.where(row, state.values + scaled_errors(state, errors), state.values)
    return state._replace(values=values)


def run_trial(
    config: Config, state: PopulationState, trial: Trial, key: jax.Array
) -> PopulationState:
    """All steps of one trial in order; the trial's length T is static, so only the last step
    is terminal and the others bootstrap from the next state."""
    num_steps = trial.states.shape[0]
    keys = jax.random.split(key, num_steps)
    for t in range(num_steps):
        if t + 1 < num_steps:
            next_value = next_state_samples(config, state, trial.states[t + 1], keys[t])
            discount = config.gamma
        else:
            next_value, discount = jnp.zeros(config.num_cells), 0.0
        state = td_step(config, state, trial.states[t], trial.rewards[t], discount, next_value)
    return state


def train(
    config: Config, key: jax.Array, sample_trial: Callable[[jax.Array], Trial]
) -> tuple[PopulationState, jnp.ndarray]:
    """Trains one animal for config.num_trials trials (a lax.scan) drawn by sample_trial(key).

    Returns the final state and the values averaged over the last config.averaging_trials
    trials, [num_states, num_cells]: the converged predictions without the jitter the learning
    rates leave (its SD scales like sqrt(alpha) times the reward SD). Jit- and vmap-safe over keys.
    """
    init_key, trials_key = jax.random.split(key)
    state = init(config, init_key)
    first_averaged = config.num_trials - config.averaging_trials

    def one_trial(carry, inputs):
        state, value_sum = carry
        index, trial_key = inputs
        sample_key, step_key = jax.random.split(trial_key)
        state = run_trial(config, state, sample_trial(sample_key), step_key)
        value_sum = value_sum + jnp.where(index >= first_averaged, state.values, 0.0)
        return (state, value_sum), None

    inputs = (jnp.arange(config.num_trials), jax.random.split(trials_key, config.num_trials))
    (state, value_sum), _ = jax.lax.scan(one_trial, (state, jnp.zeros_like(state.values)), inputs)
    return state, value_sum / config.averaging_trials


def reward_sampler(
    magnitudes: jnp.ndarray, probs: jnp.ndarray, *, state: int = 0
) -> Callable[[jax.Array], Trial]:
    """One-step trials at `state` with a reward drawn from magnitudes [R] with probs [R]."""
    magnitudes = jnp.asarray(magnitudes, jnp.float32)
    logits = jnp.log(jnp.asarray(probs, jnp.float32))

    def sample_trial(key):
        reward = magnitudes[jax.random.categorical(key, logits)]
        return Trial(jnp.array([state]), reward[None])

    return sample_trial


def error_responses(
    config: Config, state: PopulationState, errors: jnp.ndarray, *, key: jax.Array | None = None
) -> jnp.ndarray:
    """Recorded responses to prediction errors [num_cells, ...]: alpha_i^+- delta / mean_alpha_i,
    plus Gaussian noise of SD config.response_noise.

    The asymmetric scaling is the model's (slopes alpha+ above the reversal point, alpha- below);
    dividing by the cell's mean rate (alpha+ + alpha-) / 2 is a per-cell gain that puts responses
    in reward units, so the learning rates' size (convergence speed) does not set the recordings'
    signal-to-noise ratio. Noise applies to all variants, so controls compare like with like.
    """
    gain = 2.0 / (state.alpha_plus + state.alpha_minus)
    clean = scaled_errors(state, errors) * gain.reshape((-1,) + (1,) * (errors.ndim - 1))
    if config.response_noise == 0:
        return clean
    if key is None:
        raise ValueError("response_noise > 0 needs a key")
    return clean + config.response_noise * jax.random.normal(key, clean.shape)


def responses(
    config: Config,
    state: PopulationState,
    rewards: jnp.ndarray,
    *,
    key: jax.Array | None = None,
    state_index: int = 0,
) -> jnp.ndarray:
    """Each cell's response to each reward at a terminal reward state: [num_cells, num_rewards].

    The error is r - V_i (the sign flips at V_i, the reversal point); see `error_responses`.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    errors = rewards[None, :] - state.values[state_index][:, None]
    return error_responses(config, state, errors, key=key)


def make(config: Config) -> Agent:
    """The population as a distbench agent with a single action, for harness evaluation.

    Observations are state indices [B] (or one-hot [B, num_states]); an update runs the batch's
    transitions one after another, as consecutive trials. The distribution is the imputed samples
    (expectile), or the cells' values with weight 1/N (quantile, classical).
    """

    def state_indices(obs):
        obs = jnp.asarray(obs)
        return jnp.argmax(obs, axis=-1) if obs.ndim == 2 else obs.astype(jnp.int32)

    def agent_init(key, spec: EnvSpec, hparams=None):
        # The population is tabular (num_states comes from the config) and has no traced
        # hyperparameters: a sweep over its fields compiles one program per value.
        del spec, hparams
        return init(config, key)

    def act(state, obs, key, step, explore):
        del state, key, step, explore
        return jnp.zeros(state_indices(obs).shape, jnp.int32)

    def update(state, transition, key, step):
        del step
        current, following = state_indices(transition.obs), state_indices(transition.next_obs)

        def one(state, inputs):
            x, r, discount, x_next, step_key = inputs
            next_value = next_state_samples(config, state, x_next, step_key)
            errors_before = r + config.gamma * discount * next_value - state.values[x]
            state = td_step(config, state, x, r, config.gamma * discount, next_value)
            return state, jnp.mean(jnp.abs(errors_before))

        keys = jax.random.split(key, current.shape[0])
        inputs = (current, transition.reward, transition.discount, following, keys)
        state, errors = jax.lax.scan(one, state, inputs)
        # "loss" is what the training loop logs for every agent: here the mean |TD error|.
        return state, {"loss": jnp.mean(errors)}

    def distribution(state, obs):
        values = state.values[state_indices(obs)]  # [B, N]
        if config.variant == "expectile":
            values = impute_samples(
                values, asymmetries(state), num_iterations=config.imputation_iterations
            )
        probs = jnp.full(values.shape, 1.0 / values.shape[-1])
        return Atoms(values[:, None, :], probs[:, None, :])

    def greedy_values(state, obs, key=None):
        del key
        return distribution(state, obs).mean()

    return Agent(agent_init, act, update, distribution, greedy_values, config)
