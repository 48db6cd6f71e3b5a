"""DQN with double Q-learning (rlax), a Flax Q-network, a target network and a jax ring buffer.

Everything is a pure function over NamedTuples so updates jit and states serialise.
Defaults are reconstructed (PuRL's hyper-parameters are not public): a 2 x 64 MLP,
Adam 1e-3, gamma 0.99, Polyak target updates (tau 0.01), batch 64, epsilon linear from
1.0 to 0.05. Because the pruning environment scores every action of a step, the search
can add all K transitions of a step (``add`` takes a batch) instead of only the taken one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import rlax


class QNetwork(nn.Module):
    """An MLP from observations to one Q-value per action."""

    num_actions: int
    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_actions)(x)


@dataclasses.dataclass(frozen=True)
class DQNConfig:
    hidden: tuple[int, ...] = (64, 64)
    learning_rate: float = 1e-3
    discount: float = 0.99
    tau: float = 0.01  # Polyak step of the target network
    batch_size: int = 64
    buffer_size: int = 20_000
    min_replay: int = 64  # transitions before learning starts
    updates_per_step: int = 1
    epsilon_start: float = 1.0
    epsilon_end: float = 0.05
    epsilon_decay_steps: int = 500  # environment steps
    max_grad_norm: float = 10.0


class Transition(NamedTuple):
    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    next_obs: jax.Array
    discount: jax.Array  # 0 at the end of an episode, else 1


class Replay(NamedTuple):
    """A fixed-size ring buffer of transitions (leading axis of ``data`` = capacity)."""

    data: Transition
    position: jax.Array  # next slot to write
    size: jax.Array  # filled slots


class AgentState(NamedTuple):
    params: Any
    target_params: Any
    opt_state: Any
    updates: jax.Array


def replay_init(capacity: int, obs_dim: int) -> Replay:
    data = Transition(
        obs=jnp.zeros((capacity, obs_dim), jnp.float32),
        action=jnp.zeros((capacity,), jnp.int32),
        reward=jnp.zeros((capacity,), jnp.float32),
        next_obs=jnp.zeros((capacity, obs_dim), jnp.float32),
        discount=jnp.zeros((capacity,), jnp.float32),
    )
    return Replay(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


@jax.jit
def replay_add(replay: Replay, batch: Transition) -> Replay:
    """Writes a batch of B transitions (B <= capacity), wrapping around the end."""
    capacity = replay.data.action.shape[0]
    n = batch.action.shape[0]
    idx = (replay.position + jnp.arange(n)) % capacity
    data = jax.tree.map(lambda buf, x: buf.at[idx].set(x.astype(buf.dtype)), replay.data, batch)
    return Replay(data, (replay.position + n) % capacity, jnp.minimum(replay.size + n, capacity))


def replay_sample(replay: Replay, key: jax.Array, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly, with replacement, from the filled slots."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(replay.size, 1))
    return jax.tree.map(lambda x: x[idx], replay.data)


def epsilon_schedule(config: DQNConfig) -> optax.Schedule:
    return optax.linear_schedule(config.epsilon_start, config.epsilon_end,
                                 config.epsilon_decay_steps)


def double_q_td_errors(q_tm1, a_tm1, r_t, discount_t, q_t_value, q_t_selector) -> jax.Array:
    """Batched ``rlax.double_q_learning``: the selector (online net) picks the next action,
    the target net values it."""
    return jax.vmap(rlax.double_q_learning)(q_tm1, a_tm1, r_t, discount_t, q_t_value,
                                            q_t_selector)


class DQN:
    """The agent's static parts (network, optimiser, config); state lives in ``AgentState``."""

    def __init__(self, obs_dim: int, num_actions: int, config: DQNConfig = DQNConfig()):
        self.config, self.obs_dim, self.num_actions = config, obs_dim, num_actions
        self.network = QNetwork(num_actions, tuple(config.hidden))
        self.optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm),
                                     optax.adam(config.learning_rate))
        self.epsilon = epsilon_schedule(config)
        self.update, self._act = _compiled(self)

    def init(self, key: jax.Array) -> AgentState:
        """Fresh Q-network parameters, its target copy, optimiser state and step 0."""
        params = self.network.init(key, jnp.zeros((1, self.obs_dim)))
        return AgentState(params, params, self.optimizer.init(params), jnp.zeros((), jnp.int32))

    def replay(self) -> Replay:
        """An empty replay buffer of ``buffer_size`` transitions of this agent's shapes."""
        return replay_init(self.config.buffer_size, self.obs_dim)

    def __hash__(self) -> int:  # agents with equal settings share compiled functions
        return hash((self.obs_dim, self.num_actions, self.config))

    def __eq__(self, other) -> bool:
        return isinstance(other, DQN) and hash(self) == hash(other)

    def act(self, state: AgentState, obs: jax.Array, key: jax.Array, epsilon) -> jax.Array:
        """Epsilon-greedy action for one observation."""
        return self._act(state, obs, key, epsilon)

    def _act_fn(self, state: AgentState, obs: jax.Array, key: jax.Array, epsilon) -> jax.Array:
        q = self.network.apply(state.params, obs[None])[0]
        explore_key, action_key = jax.random.split(key)
        random_action = jax.random.randint(action_key, (), 0, self.num_actions)
        return jnp.where(jax.random.uniform(explore_key) < epsilon, random_action, jnp.argmax(q))

    def loss(self, params: Any, target_params: Any, batch: Transition) -> jax.Array:
        """Mean Huber loss of the double-Q TD errors: online network selects, target evaluates."""
        q_tm1 = self.network.apply(params, batch.obs)
        q_t_selector = self.network.apply(params, batch.next_obs)
        q_t_value = self.network.apply(target_params, batch.next_obs)
        td = double_q_td_errors(q_tm1, batch.action, batch.reward,
                                self.config.discount * batch.discount, q_t_value, q_t_selector)
        return jnp.mean(rlax.huber_loss(td, 1.0))

    def _update(self, state: AgentState, replay: Replay, key: jax.Array):
        """``updates_per_step`` gradient steps on replayed batches; returns (state, mean loss)."""

        def one(carry, k):
            params, target, opt_state = carry
            batch = replay_sample(replay, k, self.config.batch_size)
            loss, grads = jax.value_and_grad(self.loss)(params, target, batch)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            target = optax.incremental_update(params, target, self.config.tau)
            return (params, target, opt_state), loss

        keys = jax.random.split(key, self.config.updates_per_step)
        (params, target, opt_state), losses = jax.lax.scan(
            one, (state.params, state.target_params, state.opt_state), keys)
        return AgentState(params, target, opt_state,
                          state.updates + self.config.updates_per_step), jnp.mean(losses)


@functools.cache
def _compiled(agent: DQN):
    return jax.jit(agent._update), jax.jit(agent._act_fn)
