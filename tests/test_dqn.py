"""The DQN agent's maths on tiny problems: double-Q target, epsilon, ring buffer, a bandit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from purl_jax.dqn import (DQN, DQNConfig, Transition, double_q_td_errors, epsilon_schedule,
                          replay_add, replay_init, replay_sample)


def test_double_q_td_error_uses_online_argmax_and_target_value():
    q_tm1 = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.5, 0.0]])
    a = jnp.array([2, 1])
    r = jnp.array([1.0, -1.0])
    discount = jnp.array([0.9, 0.0])
    q_value = jnp.array([[10.0, 20.0, 30.0], [5.0, 5.0, 5.0]])  # target net
    q_selector = jnp.array([[0.0, 9.0, 1.0], [1.0, 0.0, 0.0]])  # online net picks 1 and 0
    td = double_q_td_errors(q_tm1, a, r, discount, q_value, q_selector)
    expected = np.array([1.0 + 0.9 * 20.0 - 3.0, -1.0 + 0.0 * 5.0 - 0.5])
    np.testing.assert_allclose(td, expected, rtol=1e-6)


def test_epsilon_schedule_is_linear_then_flat():
    eps = epsilon_schedule(DQNConfig(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=10))
    np.testing.assert_allclose([eps(0), eps(5), eps(10), eps(1000)], [1.0, 0.55, 0.1, 0.1], rtol=1e-6)


def _batch(values, obs_dim=2):
    v = jnp.asarray(values, jnp.float32)
    return Transition(jnp.tile(v[:, None], (1, obs_dim)), v.astype(jnp.int32), v,
                      v[:, None] * jnp.ones(obs_dim), jnp.ones_like(v))


def test_replay_buffer_wraps_around():
    replay = replay_init(5, 2)
    replay = replay_add(replay, _batch([1, 2, 3]))
    assert int(replay.position) == 3 and int(replay.size) == 3
    replay = replay_add(replay, _batch([4, 5, 6, 7]))
    assert int(replay.position) == 2 and int(replay.size) == 5
    np.testing.assert_array_equal(replay.data.reward, [6, 7, 3, 4, 5])
    np.testing.assert_array_equal(replay.data.obs[:, 0], [6, 7, 3, 4, 5])
    sample = replay_sample(replay, jax.random.key(0), 64)
    assert set(np.asarray(sample.reward).tolist()) <= {3.0, 4.0, 5.0, 6.0, 7.0}


def test_replay_sample_only_reads_filled_slots():
    replay = replay_add(replay_init(100, 2), _batch([1, 2]))
    sample = replay_sample(replay, jax.random.key(1), 256)
    assert set(np.asarray(sample.reward).tolist()) == {1.0, 2.0}


@pytest.mark.parametrize("all_actions", [True, False])
def test_agent_learns_a_bandit(all_actions):
    rewards = jnp.array([0.0, 1.0, 0.3, -0.5])
    config = DQNConfig(hidden=(16,), learning_rate=1e-2, batch_size=16, min_replay=1,
                       updates_per_step=4, epsilon_decay_steps=100)
    agent = DQN(obs_dim=3, num_actions=4, config=config)
    state, replay = agent.init(jax.random.key(0)), agent.replay()
    obs = jnp.ones(3)
    for t in range(150):
        key_act, key_upd = jax.random.split(jax.random.fold_in(jax.random.key(1), t))
        a = int(agent.act(state, obs, key_act, agent.epsilon(t)))
        if all_actions:
            batch = Transition(jnp.tile(obs, (4, 1)), jnp.arange(4), rewards, jnp.tile(obs, (4, 1)),
                               jnp.zeros(4))
        else:
            batch = Transition(obs[None], jnp.array([a]), rewards[a:a + 1], obs[None], jnp.zeros(1))
        replay = replay_add(replay, batch)
        state, _ = agent.update(state, replay, key_upd)
    q = agent.network.apply(state.params, obs[None])[0]
    assert int(jnp.argmax(q)) == 1
    if all_actions:  # every action's value is regressed: Q approaches the rewards themselves
        np.testing.assert_allclose(q, rewards, atol=0.1)


def test_agent_learns_a_two_step_chain():
    """Step 0 (obs e0): action 1 leads to a state where action 0 pays 1; everything else 0.
    A greedy one-step learner would see 0 reward at step 0 for both; bootstrapping must
    propagate the future reward back (discount 0.9)."""
    e0, e1, e2 = jnp.eye(3)
    config = DQNConfig(hidden=(16,), learning_rate=1e-2, batch_size=32, min_replay=1,
                       updates_per_step=8, discount=0.9, tau=0.1)
    agent = DQN(obs_dim=3, num_actions=2, config=config)
    state, replay = agent.init(jax.random.key(0)), agent.replay()
    step0 = Transition(jnp.stack([e0, e0]), jnp.arange(2), jnp.zeros(2), jnp.stack([e2, e1]),
                       jnp.ones(2))
    good = Transition(jnp.stack([e1, e1]), jnp.arange(2), jnp.array([1.0, 0.0]),
                      jnp.stack([e0, e0]), jnp.zeros(2))
    bad = Transition(jnp.stack([e2, e2]), jnp.arange(2), jnp.zeros(2), jnp.stack([e0, e0]),
                     jnp.zeros(2))
    for batch in (step0, good, bad):
        replay = replay_add(replay, batch)
    for t in range(150):
        state, _ = agent.update(state, replay, jax.random.key(t))
    q0 = agent.network.apply(state.params, e0[None])[0]
    assert int(jnp.argmax(q0)) == 1
    np.testing.assert_allclose(q0[1], 0.9, atol=0.15)
