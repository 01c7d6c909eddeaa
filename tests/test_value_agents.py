"""DQN and C51: losses against hand-computed values, config validation, the agent contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agents
from agents import c51, dqn
from agents.base import ConfigError, EnvSpec, Transition
from agents.common import crossings, linear_epsilon
from agents.losses import at_actions
from agents.replay import replay_add, replay_init, replay_sample

SPEC = EnvSpec(observation_shape=(4,), num_actions=2, num_envs=5)


class TestDQNLoss:
    # q_tm1[a] vs r + gamma * discount * max q_t: targets 1 + 0.5 * 4 = 3 and 2 (terminal).
    q_tm1 = jnp.array([[1.0, 2.0], [0.5, 0.0]])
    a_tm1 = jnp.array([1, 0])
    r_t = jnp.array([1.0, 2.0])
    discount_t = jnp.array([1.0, 0.0])
    q_t = jnp.array([[3.0, 4.0], [10.0, 10.0]])

    def test_squared_td_error(self):
        config = dqn.Config(gamma=0.5)
        loss = dqn.td_loss(config, self.q_tm1, self.a_tm1, self.r_t, self.discount_t, self.q_t)
        np.testing.assert_allclose(loss, (1.0**2 + 1.5**2) / 2, rtol=1e-6)

    def test_huber_td_error(self):
        config = dqn.Config(gamma=0.5, huber_delta=1.0)
        loss = dqn.td_loss(config, self.q_tm1, self.a_tm1, self.r_t, self.discount_t, self.q_t)
        np.testing.assert_allclose(loss, (0.5 * 1.0**2 + (1.5 - 0.5)) / 2, rtol=1e-6)


@pytest.mark.parametrize("kernels", ["reference", "cpu"])
class TestC51Loss:
    def test_cross_entropy_to_projected_target(self, kernels):
        # Support {0, 1}, gamma 0.5, r 0.5. Next-state action 0 has probs (.5, .5), mean .5;
        # action 1 has (.75, .25), mean .25, so the greedy next action is 0. Its atoms shift
        # to {0.5, 1.0}; 0.5 splits evenly onto {0, 1}: target (0.25, 0.75). Online probs
        # (.5, .5) give cross-entropy -(0.25 ln .5 + 0.75 ln .5) = ln 2.
        config = c51.Config(num_atoms=2, v_min=0.0, v_max=1.0, gamma=0.5, kernels=kernels)
        logits_tm1 = jnp.zeros((1, 2, 2))
        logits_t = jnp.array([[[0.0, 0.0], [jnp.log(3.0), 0.0]]])
        loss = c51.categorical_loss(
            config, logits_tm1, jnp.array([1]), jnp.array([0.5]), jnp.array([1.0]), logits_t
        )
        np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-5)

    def test_terminal_target_is_reward_projection(self, kernels):
        # Terminal: target is a point mass at r = 0.25 -> (0.75, 0.25) on {0, 1}.
        config = c51.Config(num_atoms=2, v_min=0.0, v_max=1.0, gamma=0.9, kernels=kernels)
        logits_tm1 = jnp.array([[[jnp.log(0.75), jnp.log(0.25)], [0.0, 0.0]]])
        loss = c51.categorical_loss(
            config,
            logits_tm1,
            jnp.array([0]),
            jnp.array([0.25]),
            jnp.array([0.0]),
            jnp.zeros((1, 2, 2)),
        )
        expected = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
        np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("shape, axis", [((6, 3, 5), 1), ((6, 3), 1)])
def test_at_actions_gradient_is_the_gathers_gradient(shape, axis):
    # The one-hot gradient of at_actions against autodiff through take_along_axis, also with a
    # vmapped seed axis in front as in training.
    values = jax.random.normal(jax.random.PRNGKey(6), (2, *shape))
    actions = jax.random.randint(jax.random.PRNGKey(7), (2, shape[0]), 0, shape[axis])

    def reference(v, a):
        index = jnp.expand_dims(a, tuple(range(1, v.ndim)))
        return jnp.squeeze(jnp.take_along_axis(v, index, axis=axis), axis=axis)

    def weighted(select):
        def total(v, a):
            picked = select(v, a)
            return jnp.sum(
                jnp.cos(picked) * jnp.arange(1.0, picked.size + 1.0).reshape(picked.shape)
            )

        return total

    ours = jax.vmap(jax.grad(weighted(lambda v, a: at_actions(v, a))))(values, actions)
    theirs = jax.vmap(jax.grad(weighted(reference)))(values, actions)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    np.testing.assert_array_equal(
        jax.vmap(lambda v, a: at_actions(v, a))(values, actions),
        jax.vmap(reference)(values, actions),
    )


# The replay agents; the tabular population model has its own contract test.
REPLAY_AGENTS = [name for name in agents.names() if name != "population_td"]


@pytest.mark.parametrize("name", REPLAY_AGENTS)
def test_agent_contract_shapes_and_finite(name):
    # IQN's reported grid matches its greedy grid here so the means must agree exactly.
    extra = {"num_distribution_quantiles": 32} if name == "iqn" else {}
    agent = agents.make(
        name, learning_starts=0, batch_size=8, buffer_size=64, train_every=1, **extra
    )
    key = jax.random.PRNGKey(0)
    state = agent.init(key, SPEC)
    obs = jax.random.normal(key, (5, 4))
    actions = agent.act(state, obs, key, jnp.asarray(0), True)
    assert actions.shape == (5,) and actions.dtype in (jnp.int32, jnp.int64)
    transition = Transition(obs, actions, jnp.ones(5), jnp.ones(5), obs + 0.1)
    state, metrics = jax.jit(agent.update)(state, transition, key, jnp.asarray(0))
    assert int(state.num_updates) == 5  # train_every=1 with 5 envs: five gradient steps
    assert np.isfinite(float(metrics["loss"]))
    dist = agent.distribution(state, obs)
    assert dist.locs.shape[:2] == (5, 2) and dist.locs.shape == dist.probs.shape
    np.testing.assert_allclose(dist.probs.sum(-1), 1.0, rtol=1e-5)
    if name != "edrl":
        # EDRL's atoms are imputed: their mean is its 0.5-expectile only once the expectiles are
        # consistent (non-crossing), which an untrained network's are not.
        np.testing.assert_allclose(
            dist.mean(), agent.greedy_values(state, obs, key), rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize(
    "name, overrides, fragment",
    [
        ("c51", {"num_atoms": 1}, "num_atoms=1"),
        ("c51", {"v_min": 5, "v_max": 5}, "v_min=5.0"),
        ("c51", {"kernels": "gpu"}, "kernels='gpu'"),
        ("dqn", {"gamma": 1.5}, "gamma=1.5"),
        ("dqn", {"batch_size": "lots"}, "batch_size='lots'"),
        ("dqn", {"no_such_key": 1}, "no_such_key"),
    ],
)
def test_bad_config_is_a_clear_error(name, overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        agents.make(name, **overrides)


def test_unknown_agent_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: dqn, c51, qrdqn, iqn, edrl"):
        agents.make("rainbow")


def test_string_overrides_are_parsed_to_field_types():
    config = agents.make_config("c51", num_atoms="11", v_max="10", hidden_sizes="64,64")
    assert config.num_atoms == 11 and config.v_max == 10.0 and config.hidden_sizes == (64, 64)


def test_replay_wraps_around_and_samples_only_stored():
    replay = replay_init(4, (1,), jnp.float32, num_envs=3, time_limit=None)
    batch = lambda start: Transition(
        jnp.arange(start, start + 3, dtype=jnp.float32)[:, None],
        jnp.zeros(3, jnp.int32),
        jnp.zeros(3),
        jnp.ones(3),
        jnp.arange(start + 3, start + 6, dtype=jnp.float32)[:, None],
    )
    replay = replay_add(replay, batch(0), 0)
    assert int(replay.size) == 3
    sampled = replay_sample(replay, jax.random.PRNGKey(0), 100).obs[:, 0]
    assert set(np.asarray(sampled).tolist()) <= {0.0, 1.0, 2.0}
    replay = replay_add(replay, batch(3), 3)  # writes 3, 4, 5 into slots 3, 0, 1
    np.testing.assert_array_equal(replay.frames[:, 0], [4.0, 5.0, 2.0, 3.0])
    assert int(replay.size) == 4
    replay = replay_add(replay, batch(6), 6)  # 6, 7, 8 into slots 2, 3, 0
    np.testing.assert_array_equal(replay.frames[:, 0], [8.0, 5.0, 6.0, 7.0])
    replay = replay_add(replay, batch(9), 9)  # 9, 10, 11 into slots 1, 2, 3: no wrap
    np.testing.assert_array_equal(replay.frames[:, 0], [8.0, 9.0, 10.0, 11.0])
    # Each transition's next obs is the one 3 steps on (the newest: the pending ones).
    sample = replay_sample(replay, jax.random.PRNGKey(1), 100)
    np.testing.assert_array_equal(sample.next_obs, sample.obs + 3.0)
    with pytest.raises(ConfigError, match="buffer_size=2 must be >= num_envs=3"):
        replay_init(2, (1,), jnp.float32, num_envs=3, time_limit=None)


def test_schedules_follow_the_global_step():
    config = dqn.Config(epsilon_start=1.0, epsilon_end=0.1, epsilon_steps=100)
    np.testing.assert_allclose(linear_epsilon(config, jnp.asarray(50)), 0.55, rtol=1e-6)
    np.testing.assert_allclose(linear_epsilon(config, jnp.asarray(1000)), 0.1, rtol=1e-6)
    # 10 envs, one gradient step per 10 env steps: every iteration learns once.
    assert int(crossings(jnp.asarray(20), 10, 10)) == 1
    # target period 500: only the iteration that passes a multiple of 500 syncs.
    assert int(crossings(jnp.asarray(490), 10, 500)) == 1
    assert int(crossings(jnp.asarray(500), 10, 500)) == 0


class TestEDRLLoss:
    def test_terminal_target_is_the_reward(self):
        from agents.edrl import edrl_loss

        config = agents.make_config("edrl", num_expectiles=3)
        # Expectiles already at the reward 2.0: zero loss whatever the next state says.
        e_tm1 = jnp.full((1, 2, 3), 2.0)
        e_t = jnp.array([[[-5.0, 0.0, 7.0], [1.0, 2.0, 3.0]]])
        loss = edrl_loss(config, e_tm1, jnp.array([0]), jnp.array([2.0]), jnp.array([0.0]), e_t)
        np.testing.assert_allclose(loss, 0.0, atol=1e-10)

    def test_even_number_of_expectiles_is_refused(self):
        with pytest.raises(ConfigError, match="num_expectiles=4 must be odd"):
            agents.make("edrl", num_expectiles=4)


class TestIQNEmbedding:
    def test_network_output_shape_per_tau_and_action(self):
        from agents.iqn import ImplicitQuantileNetwork

        net = ImplicitQuantileNetwork((16, 8), num_actions=3, embedding_dim=4)
        obs, taus = jnp.zeros((5, 4)), jnp.full((5, 7), 0.5)
        params = net.init(jax.random.PRNGKey(0), obs, taus)
        assert net.apply(params, obs, taus).shape == (5, 7, 3)

    def test_tau_averaged_head_equals_mean_over_taus(self):
        # average_taus evaluates the head once on the mean tau feature; the head is affine, so
        # this must equal the mean of the per-tau values (shared [1, T] or per-example taus).
        from agents.iqn import ImplicitQuantileNetwork

        net = ImplicitQuantileNetwork((16, 8), num_actions=3, embedding_dim=4)
        obs = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
        params = net.init(jax.random.PRNGKey(0), obs, jnp.full((5, 7), 0.5))
        for taus in (
            jnp.linspace(0.05, 0.95, 7)[None],
            jax.random.uniform(jax.random.PRNGKey(2), (5, 7)),
        ):
            per_tau = net.apply(params, obs, taus)
            np.testing.assert_allclose(
                net.apply(params, obs, taus, True), per_tau.mean(axis=1), rtol=1e-5, atol=1e-6
            )

    def test_values_at_actions_equal_slices_of_the_full_output(self):
        # The fused forms the loss uses: values at given actions, and at the greedy action by
        # the mean over grid taus, equal slicing [B, T, A]; so do their parameter gradients.
        from agents.iqn import ImplicitQuantileNetwork

        net = ImplicitQuantileNetwork((16, 8), num_actions=3, embedding_dim=4)
        obs = jax.random.normal(jax.random.PRNGKey(1), (6, 4))
        taus = jax.random.uniform(jax.random.PRNGKey(2), (6, 5))
        actions = jnp.array([0, 2, 1, 1, 0, 2])
        grid = jnp.linspace(0.05, 0.95, 7)[None]
        params = net.init(jax.random.PRNGKey(0), obs, taus)
        full = net.apply(params, obs, taus)  # [B, T, A]
        sliced = jnp.take_along_axis(full, actions[:, None, None], axis=2)[..., 0]
        fused = net.apply(params, obs, taus, actions=actions)
        np.testing.assert_allclose(fused, sliced, rtol=1e-5, atol=1e-6)
        greedy = jnp.argmax(net.apply(params, obs, grid, True), axis=-1)
        assert len(set(greedy.tolist())) > 1  # the check below is not trivially one action
        np.testing.assert_allclose(
            net.apply(params, obs, taus, greedy_taus=grid),
            jnp.take_along_axis(full, greedy[:, None, None], axis=2)[..., 0],
            rtol=1e-5,
            atol=1e-6,
        )

        def loss(p, fused):
            if fused:
                values = net.apply(p, obs, taus, actions=actions)
            else:
                values = jnp.take_along_axis(
                    net.apply(p, obs, taus), actions[:, None, None], axis=2
                )[..., 0]
            return jnp.sum(jnp.sin(values))

        for a, b in zip(
            jax.tree.leaves(jax.grad(loss)(params, True)),
            jax.tree.leaves(jax.grad(loss)(params, False)),
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    def test_quantile_huber_loss_hand_computed(self):
        from agents.iqn import iqn_loss

        # One example, one action. Online value 0 at tau 0.25; target r + 0.5 * z_t with
        # z_t = (2, -2) -> targets (1, -1). Huber(kappa=1): 0.5 each. Weights |0.25 - 1{u<0}|:
        # u=1 -> 0.25, u=-1 -> 0.75. Mean over targets: (0.125 + 0.375) / 2 = 0.25.
        config = agents.make_config("iqn", gamma=0.5, huber_kappa=1.0)
        loss = iqn_loss(
            config,
            jnp.zeros((1, 1)),
            jnp.array([[0.25]]),
            jnp.array([0.0]),
            jnp.array([1.0]),
            jnp.array([[2.0, -2.0]]),
        )
        np.testing.assert_allclose(loss, 0.25, rtol=1e-6)


class TestQRDQNLoss:
    def test_quantile_loss_hand_computed(self):
        from agents.qrdqn import quantile_loss

        # K=2 quantiles at taus (0.25, 0.75), both predicting 0, one action; terminal r = 1:
        # u = 1 for both -> Huber 0.5, weights 0.25 and 0.75: sum over quantiles = 0.5.
        config = agents.make_config("qrdqn", num_quantiles=2, huber_kappa=1.0)
        loss = quantile_loss(
            config,
            jnp.zeros((1, 1, 2)),
            jnp.array([0]),
            jnp.array([1.0]),
            jnp.array([0.0]),
            jnp.zeros((1, 1, 2)),
        )
        np.testing.assert_allclose(loss, 0.5, rtol=1e-6)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"batch_size": "32.5"}, "batch_size='32.5' is not an integer; valid: a whole number"),
        ({"batch_size": True}, "batch_size=True is not an integer"),
        ({"learning_rate": "-inf"}, "learning_rate='-inf' is not a finite number"),
        ({"hidden_sizes": "64,x"}, "hidden_sizes[1]='x' is not an integer"),
    ],
)
def test_config_overrides_follow_the_shared_reading(overrides, message):
    with pytest.raises(ConfigError) as raised:
        agents.make_config("dqn", **overrides)
    assert str(raised.value).startswith(message), str(raised.value)
    assert agents.make_config("dqn", batch_size="1e2").batch_size == 100
