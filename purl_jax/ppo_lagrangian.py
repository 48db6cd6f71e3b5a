"""PPO-Lagrangian with rlax and Flax: maximise reward subject to E[episode cost] <= budget.

As in Malik et al.'s released code (a modified stable-baselines3 PPO-Lagrangian): one
network with a Gaussian policy head, a reward value head and a cost value head; GAE with
lambda 0.95 for the reward and 1.0 for the cost; the policy loss
``(L_clip(A_reward) + nu * mean(ratio * A_cost)) / (1 + nu)``; and the multiplier
``nu = softplus(theta)`` trained by Adam on ``-nu * (mean cost - budget)``, so it grows
while the cost is over budget and shrinks (towards 0) below it. ``lagrangian="pid"``
swaps the gradient-ascent multiplier for Stooke et al.'s (2020) PID controller, whose
proportional and derivative terms damp the overshoot of the integral-only update.

Everything is a small pure function; ``PPOLagrangian`` only binds the static config and
jits ``act`` and ``update`` (epochs x minibatches as nested ``lax.scan``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import rlax

LAGRANGIANS = ("adam", "pid")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO and multiplier settings; defaults follow the released code where it says."""

    learning_rate: float = 3e-4
    epochs: int = 10
    num_minibatches: int = 4
    clip_eps: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    cost_gae_lambda: float = 1.0
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (32, 32)
    init_log_std: float = -1.0
    # Initial policy mean in (0, 1). 0: the constrained search starts from the uniform
    # allocation that meets the budget (``constrained.uniform_start``; 0.5 on its own); from
    # 0.5, a deep network's clamp prunes its last layers entirely in every early episode.
    init_action: float = 0.0
    lagrangian: str = "adam"
    nu_init: float = 1.0
    lagrange_lr: float = 0.05
    pid_kp: float = 1.0
    pid_ki: float = 0.1
    pid_kd: float = 1.0
    pid_ema: float = 0.9  # smoothing of the cost seen by the derivative term

    def __post_init__(self) -> None:
        if self.lagrangian not in LAGRANGIANS:
            raise ValueError(f"lagrangian must be one of {LAGRANGIANS}, got {self.lagrangian!r}")
        if self.init_action != 0.0 and not 0.0 < self.init_action < 1.0:
            raise ValueError(f"init_action must lie in (0, 1), or be 0 (uniform start), got {self.init_action}")
        if self.nu_init < 0:
            raise ValueError(f"nu_init must be >= 0, got {self.nu_init}")
        for name in ("epochs", "num_minibatches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class ActorCritic(nn.Module):
    """Separate tanh MLPs (as in the released code) for the policy mean, reward value and
    cost value; a state-independent log standard deviation.

    Actions are fractions in [0, 1] that the environment clips: the mean is squashed into
    (0, 1) so it cannot drift into the clipped region, where every sample would look the
    same and the gradient would vanish. Samples (and their log densities) stay unsquashed.
    """

    action_dim: int
    hidden: Sequence[int] = (32, 32)
    init_log_std: float = -1.0
    init_action: float = 0.5

    @nn.compact
    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        def torso(x, name):
            for i, width in enumerate(self.hidden):
                x = nn.tanh(nn.Dense(width, name=f"{name}_{i}")(x))
            return x

        logit = math.log(self.init_action / (1.0 - self.init_action))
        # a near-zero head: every state starts at init_action (orthogonal init, as in
        # PureJaxRL, costs seconds of QR compilation on a CPU for no gain at this size)
        mean = nn.sigmoid(nn.Dense(self.action_dim, kernel_init=nn.initializers.normal(0.01),
                                   bias_init=nn.initializers.constant(logit),
                                   name="policy_head")(torso(obs, "policy")))
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.action_dim,))
        v_reward = nn.Dense(1, name="reward_head")(torso(obs, "reward"))[..., 0]
        v_cost = nn.Dense(1, name="cost_head")(torso(obs, "cost"))[..., 0]
        return mean, jnp.broadcast_to(log_std, mean.shape), v_reward, v_cost


class Transition(NamedTuple):
    """One step of ``N`` environments; a rollout stacks them to ``[T, N, ...]``."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    cost: jax.Array
    done: jax.Array  # 1.0 where the episode ended with this step
    v_reward: jax.Array
    v_cost: jax.Array


class LagrangeState(NamedTuple):
    theta: jax.Array  # nu = softplus(theta) for the Adam multiplier
    opt_state: Any
    integral: jax.Array  # PID integral term
    smoothed_cost: jax.Array  # PID: EMA of the episode cost, for the derivative term
    nu: jax.Array


class AgentState(NamedTuple):
    params: Any
    opt_state: Any
    lagrange: LagrangeState


# -- maths -------------------------------------------------------------------------------

def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Log density of a diagonal Gaussian, summed over the last axis."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def gaussian_entropy(log_std: jax.Array) -> jax.Array:
    return jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e), axis=-1)


def gae(rewards: jax.Array, values: jax.Array, dones: jax.Array, last_value: jax.Array,
        gamma: float, lam: float) -> jax.Array:
    """Advantages ``[T, N]`` by rlax's truncated GAE, vmapped over the ``N`` environments.

    ``done[t]`` cuts the bootstrap after step ``t`` (discount 0), so rollouts may hold
    several episodes; ``last_value`` bootstraps an episode the rollout cut short.
    """
    discounts = gamma * (1.0 - dones)
    values = jnp.concatenate([values, last_value[None]], axis=0)
    per_env = jax.vmap(rlax.truncated_generalized_advantage_estimation,
                       in_axes=(1, 1, None, 1), out_axes=1)
    return per_env(rewards, discounts, lam, values)


def normalize(x: jax.Array) -> jax.Array:
    return (x - x.mean()) / (x.std() + 1e-8)


def lagrangian_policy_loss(ratio: jax.Array, adv_reward: jax.Array, adv_cost: jax.Array,
                           nu: jax.Array, clip_eps: float) -> jax.Array:
    """``(L_clip(A_r) + nu * mean(ratio * A_c)) / (1 + nu)``: the 1 + nu keeps the step size
    bounded as nu grows; the cost term is unclipped, as in the released code."""
    l_clip = rlax.clipped_surrogate_pg_loss(ratio, adv_reward, clip_eps)
    l_cost = jnp.mean(ratio * jax.lax.stop_gradient(adv_cost))
    return (l_clip + nu * l_cost) / (1.0 + nu)


def dual_loss(theta: jax.Array, mean_cost: jax.Array, budget: jax.Array) -> jax.Array:
    """Minimised over theta: its gradient raises nu exactly while ``mean_cost > budget``."""
    return -jax.nn.softplus(theta) * (mean_cost - budget)


def init_lagrange(cfg: PPOConfig, optimizer: optax.GradientTransformation) -> LagrangeState:
    nu = jnp.float32(cfg.nu_init)
    theta = jnp.log(jnp.expm1(jnp.maximum(nu, 1e-6)))  # softplus^-1
    zero = jnp.zeros((), jnp.float32)
    return LagrangeState(theta, optimizer.init(theta), zero, zero, nu)


def adam_lagrange_update(state: LagrangeState, mean_cost: jax.Array, budget: jax.Array,
                         optimizer: optax.GradientTransformation) -> LagrangeState:
    grad = jax.grad(dual_loss)(state.theta, mean_cost, budget)
    updates, opt_state = optimizer.update(grad, state.opt_state, state.theta)
    theta = optax.apply_updates(state.theta, updates)
    return state._replace(theta=theta, opt_state=opt_state, nu=jax.nn.softplus(theta))


def pid_lagrange_update(state: LagrangeState, mean_cost: jax.Array, budget: jax.Array,
                        kp: float, ki: float, kd: float, ema: float) -> LagrangeState:
    """Stooke et al. 2020, Alg. 2: nu = (Kp e + Ki sum e + Kd max(0, d cost))_+, with the
    integral kept non-negative so it cannot wind up while the constraint is slack."""
    error = mean_cost - budget
    integral = jnp.maximum(0.0, state.integral + error)
    smoothed = ema * state.smoothed_cost + (1.0 - ema) * mean_cost
    derivative = jnp.maximum(0.0, smoothed - state.smoothed_cost)
    nu = jnp.maximum(0.0, kp * error + ki * integral + kd * derivative)
    return state._replace(integral=integral, smoothed_cost=smoothed, nu=nu)


# -- the agent ---------------------------------------------------------------------------

class PPOLagrangian:
    """Binds a ``PPOConfig`` and the action size; ``init``, ``act`` and ``update`` are pure."""

    def __init__(self, cfg: PPOConfig, obs_dim: int, action_dim: int):
        self.cfg, self.obs_dim, self.action_dim = cfg, obs_dim, action_dim
        init = cfg.init_action or 0.5  # no budget known here
        self.network = ActorCritic(action_dim, tuple(cfg.hidden), cfg.init_log_std, init)
        self.optimizer = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                                     optax.adam(cfg.learning_rate, eps=1e-5))
        self.dual_optimizer = optax.adam(cfg.lagrange_lr)
        self.act = jax.jit(self._act)
        self.update = jax.jit(self._update)
        self.imitate = jax.jit(self._imitate, static_argnums=3)

    def init(self, rng: jax.Array) -> AgentState:
        """Fresh actor-critic parameters, optimiser state and Lagrange multiplier state."""
        params = jax.jit(self.network.init)(rng, jnp.zeros((1, self.obs_dim)))
        return AgentState(params, self.optimizer.init(params),
                          init_lagrange(self.cfg, self.dual_optimizer))

    def _act(self, params, obs: jax.Array, rng: jax.Array):
        """Samples actions for a batch of observations: (action, log_prob, v_reward, v_cost)."""
        mean, log_std, v_r, v_c = self.network.apply(params, obs)
        action = mean + jnp.exp(log_std) * jax.random.normal(rng, mean.shape)
        return action, gaussian_log_prob(action, mean, log_std), v_r, v_c

    def _imitate(self, state: AgentState, obs: jax.Array, actions: jax.Array,
                 steps: int = 500) -> tuple[AgentState, jax.Array]:
        """Regresses the policy mean onto ``actions`` at ``obs`` (behaviour cloning): a
        warm start from a known allocation. Returns the new state (its optimiser state
        fresh) and the final mean squared error."""
        optimizer = optax.adam(1e-2)

        def loss(params):
            return jnp.mean((self.network.apply(params, obs)[0] - actions) ** 2)

        def step(carry, _):
            params, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss)(params), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (state.params, optimizer.init(state.params)), None,
                                      length=steps)
        return state._replace(params=params, opt_state=self.optimizer.init(params)), loss(params)

    def _update(self, state: AgentState, traj: Transition, last_obs: jax.Array,
                budget: jax.Array, rng: jax.Array) -> tuple[AgentState, dict]:
        """One PPO-Lagrangian iteration on a rollout ``traj`` ([T, N, ...]).

        The multiplier moves first, on the mean cost of the episodes that ended in the
        rollout, and the policy update then uses the new nu.
        """
        cfg = self.cfg
        _, _, last_vr, last_vc = self.network.apply(state.params, last_obs)
        adv_r = gae(traj.reward, traj.v_reward, traj.done, last_vr, cfg.gamma, cfg.gae_lambda)
        adv_c = gae(traj.cost, traj.v_cost, traj.done, last_vc, cfg.gamma, cfg.cost_gae_lambda)
        ret_r, ret_c = adv_r + traj.v_reward, adv_c + traj.v_cost

        episodes = jnp.maximum(traj.done.sum(), 1.0)
        mean_cost = traj.cost.sum() / episodes
        if cfg.lagrangian == "adam":
            lagrange = adam_lagrange_update(state.lagrange, mean_cost, budget, self.dual_optimizer)
        else:
            lagrange = pid_lagrange_update(state.lagrange, mean_cost, budget, cfg.pid_kp,
                                           cfg.pid_ki, cfg.pid_kd, cfg.pid_ema)
        nu = lagrange.nu

        flat = lambda x: x.reshape((-1, *x.shape[2:]))
        batch = jax.tree.map(flat, (traj.obs, traj.action, traj.log_prob, adv_r, adv_c, ret_r, ret_c))
        size = batch[0].shape[0]
        if size % cfg.num_minibatches:
            raise ValueError(f"rollout of {size} steps is not divisible into "
                             f"{cfg.num_minibatches} minibatches")

        def loss_fn(params, mb):
            obs, action, old_logp, a_r, a_c, r_r, r_c = mb
            mean, log_std, v_r, v_c = self.network.apply(params, obs)
            ratio = jnp.exp(gaussian_log_prob(action, mean, log_std) - old_logp)
            pi_loss = lagrangian_policy_loss(ratio, normalize(a_r), normalize(a_c), nu, cfg.clip_eps)
            v_loss = jnp.mean((v_r - r_r) ** 2) + jnp.mean((v_c - r_c) ** 2)
            entropy = jnp.mean(gaussian_entropy(log_std))
            total = pi_loss + cfg.value_coef * v_loss - cfg.entropy_coef * entropy
            approx_kl = jnp.mean((ratio - 1.0) - jnp.log(ratio))
            return total, dict(pi_loss=pi_loss, v_loss=v_loss, entropy=entropy, approx_kl=approx_kl)

        def minibatch(carry, mb):
            params, opt_state = carry
            grads, info = jax.grad(loss_fn, has_aux=True)(params, mb)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), info

        def epoch(carry, key):
            perm = jax.random.permutation(key, size)
            mbs = jax.tree.map(lambda x: x[perm].reshape((cfg.num_minibatches, -1, *x.shape[1:])), batch)
            return jax.lax.scan(minibatch, carry, mbs)

        (params, opt_state), info = jax.lax.scan(
            epoch, (state.params, state.opt_state), jax.random.split(rng, cfg.epochs))
        metrics = jax.tree.map(jnp.mean, info)
        metrics.update(nu=nu, mean_cost=mean_cost, mean_return=traj.reward.sum() / episodes)
        return AgentState(params, opt_state, lagrange), metrics
