"""PPO-Lagrangian maths against hand-computed values, the multipliers, and a toy problem."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from purl_jax import ppo_lagrangian as pl


def test_gae_matches_hand_computed():
    # One episode of 3 steps, reward 1 at the end, values 0.5; a 2nd env with a cut rollout.
    rewards = jnp.array([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    values = jnp.full((3, 2), 0.5)
    dones = jnp.array([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    last = jnp.array([9.0, 2.0])  # env 0 ended: its bootstrap is ignored
    adv = pl.gae(rewards, values, dones, last, gamma=1.0, lam=0.95)
    np.testing.assert_allclose(adv[:, 0], [0.95**2 * 0.5, 0.95 * 0.5, 0.5], rtol=1e-6)
    # env 1: step 0 ends (delta 0.5); steps 1, 2 bootstrap to 2.0: delta_2 = 1.5, delta_1 = 0
    np.testing.assert_allclose(adv[:, 1], [0.5, 0.95 * 1.5, 1.5], rtol=1e-6)
    # lambda 1 (the cost's) gives Monte-Carlo returns minus values
    adv1 = pl.gae(rewards, values, dones, last, gamma=1.0, lam=1.0)
    np.testing.assert_allclose(adv1[:, 0], [0.5, 0.5, 0.5], rtol=1e-6)


def test_policy_loss_hand_computed():
    ratio = jnp.array([1.5, 0.5])
    adv_r = jnp.array([1.0, -1.0])
    adv_c = jnp.array([2.0, 4.0])
    nu = jnp.float32(3.0)
    # clipped: min(1.5*1, 1.2*1) = 1.2; min(0.5*-1, 0.8*-1) = -0.8 -> L_clip = -(0.2)
    l_clip = -(1.2 - 0.8) / 2
    l_cost = (1.5 * 2 + 0.5 * 4) / 2
    got = pl.lagrangian_policy_loss(ratio, adv_r, adv_c, nu, 0.2)
    np.testing.assert_allclose(got, (l_clip + 3.0 * l_cost) / 4.0, rtol=1e-6)


def test_gaussian_log_prob():
    x, mean, log_std = jnp.array([[0.3, -1.0]]), jnp.array([[0.0, 0.0]]), jnp.log(jnp.array([[2.0, 0.5]]))
    expect = sum(-0.5 * (xi / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
                 for xi, s in [(0.3, 2.0), (-1.0, 0.5)])
    np.testing.assert_allclose(pl.gaussian_log_prob(x, mean, log_std), [expect], rtol=1e-6)


@pytest.mark.parametrize("over", [True, False])
def test_adam_multiplier_direction(over):
    cfg = pl.PPOConfig(nu_init=1.0, lagrange_lr=0.1)
    opt = optax.adam(cfg.lagrange_lr)
    state = pl.init_lagrange(cfg, opt)
    np.testing.assert_allclose(state.nu, 1.0, rtol=1e-5)
    cost = 0.5 if over else 0.1
    for _ in range(20):
        state = pl.adam_lagrange_update(state, jnp.float32(cost), jnp.float32(0.3), opt)
    assert (state.nu > 1.5) if over else (state.nu < 0.5)
    assert state.nu >= 0


def test_pid_multiplier():
    cfg = pl.PPOConfig(lagrangian="pid", nu_init=0.0)
    state = pl.init_lagrange(cfg, optax.adam(0.1))
    up = pl.pid_lagrange_update(state, jnp.float32(0.5), jnp.float32(0.3), 1.0, 0.1, 0.0, 0.9)
    # e = 0.2, integral 0.2, nu = 0.2 + 0.02
    np.testing.assert_allclose(up.nu, 0.22, rtol=1e-5)
    down = up
    for _ in range(5):
        down = pl.pid_lagrange_update(down, jnp.float32(0.0), jnp.float32(0.3), 1.0, 0.1, 0.0, 0.9)
    assert down.nu == 0 and down.integral == 0  # no wind-up below the budget
    # the derivative term reacts to a rising cost before the error integrates
    d = pl.pid_lagrange_update(state, jnp.float32(0.3), jnp.float32(0.3), 0.0, 0.0, 10.0, 0.5)
    np.testing.assert_allclose(d.nu, 10 * 0.15, rtol=1e-5)


def test_bad_config():
    with pytest.raises(ValueError, match="lagrangian"):
        pl.PPOConfig(lagrangian="sgd")
    with pytest.raises(ValueError, match="epochs"):
        pl.PPOConfig(epochs=0)


def test_imitate_fits_the_policy_mean_to_given_actions():
    agent = pl.PPOLagrangian(pl.PPOConfig(), obs_dim=3, action_dim=1)
    state = agent.init(jax.random.key(0))
    obs = jax.random.uniform(jax.random.key(1), (6, 3))
    target = jnp.array([0.1, 0.5, 0.9, 0.97, 0.3, 0.6])[:, None]
    before = agent.network.apply(state.params, obs)[0]
    assert float(jnp.abs(before - target).max()) > 0.3  # the fresh policy is flat at 0.5
    fitted, mse = agent.imitate(state, obs, target, 1000)  # 500 left 1.3e-4 on an AMD CPU
    assert float(mse) < 1e-4
    assert agent.network.apply(fitted.params, obs)[0] == pytest.approx(np.asarray(target), abs=0.02)
    # only the policy moved: both value heads still give the fresh network's values
    for new, old in zip(agent.network.apply(fitted.params, obs)[2:], agent.network.apply(state.params, obs)[2:]):
        np.testing.assert_allclose(new, old, rtol=1e-6)


def _toy(lagrangian: str, iterations: int, seed: int = 0):
    """One-step episodes: reward = cost = clip(a, 0, 1); the optimum is a = budget."""
    budget, n = 0.3, 32
    cfg = pl.PPOConfig(learning_rate=3e-3, epochs=4, num_minibatches=2, init_action=0.8,
                       lagrangian=lagrangian, lagrange_lr=0.5, nu_init=0.5,
                       pid_kp=5.0, pid_ki=1.0, pid_kd=2.0)
    agent = pl.PPOLagrangian(cfg, obs_dim=1, action_dim=1)
    state = agent.init(jax.random.key(seed))
    obs = jnp.ones((n, 1))
    costs = []
    for it in range(iterations):
        k_act, k_up = jax.random.split(jax.random.fold_in(jax.random.key(seed), it))
        action, logp, vr, vc = agent.act(state.params, obs, k_act)
        a = jnp.clip(action[:, 0], 0.0, 1.0)
        traj = pl.Transition(obs[None], action[None], logp[None], a[None], a[None],
                             jnp.ones((1, n)), vr[None], vc[None])
        state, metrics = agent.update(state, traj, obs, jnp.float32(budget), k_up)
        costs.append(float(metrics["mean_cost"]))
    mean, *_ = agent.network.apply(state.params, obs[:1])
    return float(mean[0, 0]), np.array(costs), state


def test_toy_pid_settles_on_the_budget():
    mean, costs, _ = _toy("pid", 100)
    assert costs[0] > 0.5  # starts over budget
    assert abs(costs[-40:].mean() - 0.3) < 0.06, costs
    assert abs(mean - 0.3) < 0.12


def test_toy_adam_enforces_the_budget():
    # Reward and cost are the same signal here, so the integral-only multiplier swings
    # (the oscillation PID damps); it must still drive the cost under the budget.
    _, costs, _ = _toy("adam", 40)
    assert costs[0] > 0.5
    assert costs[-10:].max() < 0.3, costs
