"""``prune(config, workdir)``: dense model -> search -> masked fine-tuning -> test accuracy.

Algorithms are looked up by ``config.prune.algorithm`` in a string registry, so other
modules add their own (``register_algorithm("constrained", fn)``). An algorithm is
``fn(ctx: PruneContext) -> dict`` returning at least ``masks`` (a mask tree); everything
else it returns that is JSON-able lands in the result. Built in: ``purl`` (DQN search,
``purl_search``), ``constrained`` (PPO-Lagrangian search under a cost budget,
``purl_jax.constrained``) and the magnitude baselines of ``purl_jax.baselines``, all
fine-tuned the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from typing import Any, Callable, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from tqdm.auto import tqdm

from purl_jax import baselines, files
from purl_jax.budgets import flops_cost
from purl_jax.data import DataError, Dataset, Splits, calibration_subset, reward_subset
from purl_jax.dqn import DQN, DQNConfig, Transition, replay_add
from purl_jax.env import (EnvError, PruningEnv, RewardSpec, action_grid, check_action_mode,
                          check_passes, check_reward_mode, hinge_reward)
from purl_jax.graph import Graph
from purl_jax.checkpoint import check_matches
from purl_jax.export import ExportError, compact, save_export, sparse_storage
from purl_jax.masks import (Masks, MaskPolicy, channel_masks_from_masks, get_path, gradual_ratios,
                            init_masks, magnitude_masks, masked_layers, summary)

EXPERIENCE = ("taken", "all_actions")
SELECT = ("reward", "projected", "finetuned")


class PruneError(ValueError):
    """A pruning config that cannot work. ``prune`` raises it before the dense model is
    loaded or trained and before any search: from ``validate``, or from ``prune_context``
    for what needs the data or the model (``prune.bn_calibration`` against the training
    split, a mask policy that leaves no layer). Library calls (``purl_search``) raise it
    for bad arguments."""


@dataclasses.dataclass
class PruneContext:
    """What a search algorithm gets: the trained dense model, data and the evaluator."""

    config: ml_collections.ConfigDict
    workdir: epath.Path
    model: Any
    variables: dict
    splits: Splits
    graph: Graph
    base_masks: Masks  # all-true masks on the prunable layers (config.mask_policy)
    reward_set: Dataset  # drawn from the validation split, never test
    evaluator: Any  # purl_jax.evaluator.Evaluator on the reward set
    trainer: Any = None  # purl_jax.train, or what prune() was given instead


Algorithm = Callable[[PruneContext], dict]
_ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(name: str, fn: Algorithm) -> None:
    """Adds a search algorithm selectable as ``config.prune.algorithm = name``."""
    if name in _ALGORITHMS:
        raise ValueError(f"algorithm {name!r} is already registered")
    _ALGORITHMS[name] = fn


def get_algorithm(name: str) -> Algorithm:
    if name not in _ALGORITHMS:
        raise PruneError(f"unknown pruning algorithm {name!r}; available: {sorted(_ALGORITHMS)}")
    return _ALGORITHMS[name]


# -- the PuRL search ----------------------------------------------------------------------


def _final_key(info: dict) -> tuple:
    return info.get("projected_accuracy", 0.0), info["final_reward"], info["accuracy"], info["sparsity"]


def purl_search(env: PruningEnv, agent: DQN, *, episodes: int, seed: int = 0,
                experience: str = "all_actions", workdir: str | os.PathLike | None = None,
                checkpoint_every: int = 1, progress: bool = True,
                projected_accuracy: Callable[[Masks], float] | None = None, keep: int = 1) -> dict:
    """Runs DQN episodes over ``env``; returns the best masks by final reward, or with
    ``projected_accuracy`` (of an episode's mask tree, as the search will return it) by
    that accuracy first. ``keep`` > 1 adds ``candidates``: the ``keep`` best episodes as
    (info, masks) pairs, best first, their masks replayed from their actions.

    ``experience="all_actions"`` adds the transition of every scored action at each step
    (the evaluator scored them anyway), ``"taken"`` only the one taken. With ``workdir``
    the agent, replay buffer, best result and episode counter are saved atomically every
    ``checkpoint_every`` episodes to ``purl_search.msgpack`` and a rerun resumes there;
    ``episodes.jsonl`` gets one line per episode. Random keys depend only on (seed,
    episode, step), so a resumed run matches an uninterrupted one. In a multi-process run
    every process runs the same search and resumes from the same file; process 0 writes.
    """
    check_search(experience, episodes, checkpoint_every)
    if keep < 1:
        raise PruneError(f"keep must be >= 1, got {keep}")
    workdir = None if workdir is None else files.path(workdir)
    init_key, key = jax.random.split(jax.random.key(seed))
    dense_state = env.reset()
    blank = dict(agent=agent.init(init_key), replay=agent.replay(),
                 episode=0, env_steps=0, best_masks=dense_state.layer_masks, best="{}", top="[]")
    saved, ckpt_path, log_path = blank, None, None
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        ckpt_path, log_path = workdir / "purl_search.msgpack", workdir / "episodes.jsonl"
        if ckpt_path.exists():
            restored = flax.serialization.msgpack_restore(ckpt_path.read_bytes())
            restored.setdefault("top", "[]")  # written before ``keep`` existed
            saved = flax.serialization.from_state_dict(blank, restored)
        if files.is_writer():  # the log loses the episodes after the checkpoint
            lines = log_path.read_text().splitlines() if log_path.exists() else []
            kept = [l for l in lines if json.loads(l)["episode"] < saved["episode"]]
            log_path.write_text("".join(l + "\n" for l in kept))
    agent_state, replay = saved["agent"], saved["replay"]
    env_steps, start = int(saved["env_steps"]), int(saved["episode"])
    best = json.loads(saved["best"]) or None
    top = json.loads(saved["top"])[:keep]  # the best episodes with distinct masks, best first
    if keep > 1 and best is not None and not top:  # saved by a search with keep = 1
        top = [dict(best, digest=_digest(best_masks))]
    best_masks = tuple(jnp.asarray(m) for m in saved["best_masks"])
    spec = env.reward
    bar = tqdm(range(start, episodes), desc="purl", disable=not progress, initial=start,
               total=episodes)
    for episode in bar:
        t0 = time.perf_counter()
        state, obs = dense_state, env.observe(dense_state)
        ret, losses, actions = 0.0, [], []
        for t in range(env.num_steps):
            k_act, k_upd = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, episode), t))
            out = env.score_actions(state, episode)
            epsilon = float(agent.epsilon(env_steps))
            a = int(agent.act(agent_state, obs, k_act, epsilon))
            discount = 0.0 if out.done else 1.0
            if experience == "all_actions":
                k = env.num_actions
                batch = Transition(jnp.tile(obs, (k, 1)), jnp.arange(k), out.reward,
                                   out.next_obs, jnp.full((k,), discount))
            else:
                batch = Transition(obs[None], jnp.asarray([a]), out.reward[a:a + 1],
                                   out.next_obs[a:a + 1], jnp.asarray([discount]))
            replay = replay_add(replay, batch)
            env_steps += 1
            if int(replay.size) >= agent.config.min_replay:
                agent_state, loss = agent.update(agent_state, replay, k_upd)
                losses.append(float(loss))
            ret += float(out.reward[a])
            actions.append(a)
            state, obs = env.step(state, out, a), out.next_obs[a]
        sparsity = float(out.sparsity[a])
        info = dict(
            episode=episode, final_reward=float(hinge_reward(
                state.accuracy, sparsity, spec.target_accuracy, spec.target_sparsity, spec.beta)),
            **{"return": ret}, accuracy=state.accuracy, sparsity=sparsity,
            actions=[float(env.actions[i]) for i in actions], epsilon=epsilon,
            loss=float(np.mean(losses)) if losses else None, env_steps=env_steps,
            seconds=round(time.perf_counter() - t0, 3),
        )
        if projected_accuracy is not None:
            info["projected_accuracy"] = float(projected_accuracy(env.masks_tree(state.layer_masks)))
        if best is None or _final_key(info) > _final_key(best):
            best, best_masks = info, state.layer_masks
        if keep > 1:  # distinct masks only: greedy episodes often repeat one another
            digest = _digest(state.layer_masks)
            if all(t["digest"] != digest for t in top):
                top = sorted([*top, dict(info, digest=digest)], key=_final_key, reverse=True)[:keep]
        info["best_final_reward"] = best["final_reward"]
        bar.set_postfix(reward=f"{info['final_reward']:.3f}", best=f"{best['final_reward']:.3f}",
                        acc=f"{info['accuracy']:.3f}", sparsity=f"{sparsity:.3f}")
        if log_path is not None:
            files.append_line(log_path, json.dumps(info))
            if (episode + 1) % checkpoint_every == 0 or episode + 1 == episodes:
                files.write_bytes_atomic(ckpt_path, flax.serialization.to_bytes(dict(
                    agent=agent_state, replay=replay, episode=episode + 1, env_steps=env_steps,
                    best_masks=best_masks, best=json.dumps(best), top=json.dumps(top))))
    bar.close()
    found = dict(masks=env.masks_tree(best_masks), best=best)
    if keep > 1:
        grid = np.asarray(env.actions)
        found["candidates"] = [({k: v for k, v in t.items() if k != "digest"}, env.masks_tree(env.replay(
            [int(np.abs(grid - a).argmin()) for a in t["actions"]]))) for t in top]
    return found


def check_search(experience: str, episodes: int, checkpoint_every: int = 1) -> None:
    """``purl_search``'s settings, each message starting with its ``config.prune`` field."""
    if experience not in EXPERIENCE:
        raise PruneError(f"experience must be one of {EXPERIENCE}, got {experience!r}")
    for name, value in (("episodes", episodes), ("checkpoint_every", checkpoint_every)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise PruneError(f"{name} must be an integer >= 1, got {value!r}")


def _digest(layer_masks: Sequence[jax.Array]) -> str:
    h = hashlib.sha1()
    for m in layer_masks:
        h.update(np.packbits(np.asarray(m)).tobytes())
    return h.hexdigest()


def dqn_config(cfg: ml_collections.ConfigDict) -> DQNConfig:
    fields = {f.name for f in dataclasses.fields(DQNConfig)}
    given = dict(cfg.to_dict()) if cfg is not None else {}
    unknown = set(given) - fields
    if unknown:
        raise PruneError(f"unknown prune.dqn fields {sorted(unknown)}; known: {sorted(fields)}")
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    return DQNConfig(**given)


def make_env(ctx: PruneContext) -> PruningEnv:
    """The MDP of ``config.prune``: target accuracy = the dense reward-set accuracy minus
    ``accuracy_tolerance`` (reconstructed). With ``prune.reward_finetune`` every action is
    scored after a few masked SGD steps (PuRL's optional per-step fine-tuning)."""
    from purl_jax import reward_finetune

    p = ctx.config.prune
    dense = float(ctx.evaluator.evaluate(ctx.base_masks).accuracy)
    reward = RewardSpec(target_accuracy=max(dense - p.accuracy_tolerance, 1e-3),
                        target_sparsity=p.target_sparsity, beta=p.beta, mode=p.reward_mode)
    scorer = reward_finetune.from_config(ctx.config, ctx.model, ctx.variables, ctx.splits,
                                         ctx.reward_set, ctx.evaluator, ctx.graph)
    evaluate_layer = ctx.evaluator if scorer is None else scorer.evaluate_layer
    return PruningEnv(ctx.variables["params"], ctx.graph, ctx.base_masks, evaluate_layer,
                      reward, action_mode=p.action_mode, actions=p.actions, passes=p.passes,
                      max_layer_sparsity=p.max_layer_sparsity)


def run_purl(ctx: PruneContext) -> dict:
    """``prune.select = "projected"`` ranks episodes by the reward-set accuracy of their
    masks after ``prune.project``, the masks returned, instead of by the hinge reward
    where each episode stopped (often well short of the target). ``"finetuned"`` takes
    the ``prune.select_candidates`` best of that ranking and returns the one most accurate
    on the validation split after ``prune.select_steps`` masked SGD steps each."""
    from purl_jax.constrained import select_function

    p = ctx.config.prune
    env = make_env(ctx)
    agent = DQN(env.obs_dim, env.num_actions, dqn_config(p.dqn))
    project = lambda masks: masks if p.project == "none" else baselines.PROJECTIONS[p.project](
        ctx.variables["params"], ctx.base_masks, ctx.graph, masks, p.target_sparsity,
        max_layer_sparsity=p.max_layer_sparsity)
    scored = None
    if p.select != "reward":
        scored = lambda masks: ctx.evaluator.evaluate(project(masks)).accuracy
    keep = p.select_candidates if p.select == "finetuned" else 1
    # built before the search, so its errors come before hours of search, not after
    select = (select_function(ctx.config, ctx.model, ctx.variables, ctx.splits, ctx.evaluator)
              if keep > 1 else None)
    found = purl_search(env, agent, episodes=p.episodes, seed=ctx.config.seed,
                        experience=p.experience, workdir=ctx.workdir / "search",
                        checkpoint_every=p.checkpoint_every, progress=p.progress,
                        projected_accuracy=scored, keep=keep)
    found["masks"] = project(found["masks"])  # the hinge reaches the target only roughly
    if keep > 1:
        infos, masks = zip(*found.pop("candidates"))
        masks = [project(m) for m in masks]
        scores = np.asarray(select(jax.tree.map(lambda *m: jnp.stack(m), *masks)))
        chosen = int(np.argmax(scores))
        found["masks"], found["best"] = masks[chosen], infos[chosen]
        found["selection"] = [dict(episode=i["episode"], projected_accuracy=i["projected_accuracy"],
                                   selection_score=float(c)) for i, c in zip(infos, scores)]
    return found


def run_baseline(name: str, ctx: PruneContext) -> dict:
    p = ctx.config.prune
    masks = baselines.BASELINES[name](ctx.variables["params"], ctx.base_masks, ctx.graph,
                                      p.target_sparsity, seed=ctx.config.seed,
                                      min_keep_fraction=p.min_keep_fraction)
    return dict(masks=masks)


register_algorithm("purl", run_purl)
for _name in baselines.BASELINES:
    register_algorithm(_name, functools.partial(run_baseline, _name))


# -- the command --------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
    """Clear errors for settings that cannot work, before any training or search."""
    p = config.prune
    get_algorithm(p.algorithm)
    if p.algorithm != "constrained":  # the constrained search has a budget instead
        if "target_sparsity" not in p:
            raise PruneError(f"prune.algorithm = {p.algorithm!r} prunes to prune.target_sparsity, "
                             "which a constrained search's config.prune lacks (it has a budget): "
                             "build config.prune with purl_defaults(target_sparsity, episodes)")
        if not 0.0 < p.target_sparsity < 1.0:
            raise PruneError(f"prune.target_sparsity must lie in (0, 1), got {p.target_sparsity}")
    if p.algorithm == "purl":
        try:  # the checks the search makes; each message starts with the field's name
            check_action_mode(p.action_mode)
            check_reward_mode(p.reward_mode)
            check_passes(p.passes)
            check_search(p.experience, p.episodes, p.checkpoint_every)
        except ValueError as e:
            raise PruneError(f"prune.{e}") from None
        try:
            action_grid(p.action_mode, p.actions)
        except EnvError as e:
            raise PruneError(f"prune.actions: {e}") from None
        dqn_config(p.dqn)
        if p.project not in (*baselines.PROJECTIONS, "none"):
            raise PruneError(f"prune.project must be one of {(*baselines.PROJECTIONS, 'none')}, "
                             f"got {p.project!r}")
        if p.select not in SELECT:
            raise PruneError(f"prune.select must be one of {SELECT}, got {p.select!r}")
        if p.select != "reward" and p.project == "none":
            raise PruneError(f'prune.select = "{p.select}" ranks episodes after prune.project; '
                             'set prune.project to one of ' + str(tuple(baselines.PROJECTIONS)))
        if p.select == "finetuned" and (p.select_candidates < 2 or p.select_steps < 1):
            raise PruneError('prune.select = "finetuned" needs select_candidates >= 2 and '
                             f"select_steps >= 1, got {p.select_candidates} and {p.select_steps}")
        cap = p.max_layer_sparsity
        if not p.target_sparsity <= cap <= 1.0:
            raise PruneError(f"prune.max_layer_sparsity must lie in [target_sparsity, 1] = "
                             f"[{p.target_sparsity}, 1], got {cap}")
    elif p.algorithm == "constrained":
        from purl_jax import constrained

        try:
            constrained.check_config(p, config.seed)
        except ValueError as e:
            raise PruneError(str(e)) from None
    unknown = [n for n in p.get("front_baselines", ()) if n not in baselines.FRONT_BASELINES]
    if unknown:
        raise PruneError(f"prune.front_baselines: unknown {unknown}; known: {sorted(baselines.FRONT_BASELINES)}")
    rounds = config.finetune.rounds
    if not isinstance(rounds, int) or rounds < 1:
        raise PruneError(f"finetune.rounds must be a positive integer, got {rounds!r}")
    final_epochs = config.finetune.final_epochs
    if not isinstance(final_epochs, int) or final_epochs < 0:
        raise PruneError(f"finetune.final_epochs must be an integer >= 0, got {final_epochs!r}")
    if rounds > 1 and p.get("action", "layer") != "layer":
        raise PruneError("finetune.rounds > 1 prunes weights by magnitude, which would undo "
                         f"prune.action={p.action!r}'s channel structure; use rounds = 1")
    if rounds > 1 and "uniform_l1" in p.get("front_baselines", ()):
        raise PruneError("finetune.rounds > 1 prunes weights by magnitude, which would undo "
                         "the uniform_l1 front baseline's channel structure; use rounds = 1")
    from purl_jax import reward_finetune

    try:
        reward_finetune.check(p.reward_finetune)
    except ValueError as e:
        raise PruneError(str(e)) from None
    calibration = p.bn_calibration
    if not isinstance(calibration, int) or calibration < 0:
        raise PruneError(f"prune.bn_calibration must be a number of training images >= 0, got {calibration!r}")
    if not 0 < p.reward_set_size <= config.validation_size:
        raise PruneError(
            f"prune.reward_set_size={p.reward_set_size} must lie in (0, config.validation_size="
            f"{config.validation_size}]: the reward set is drawn from the validation split. Lower "
            "prune.reward_set_size or raise config.validation_size (with config.dense_checkpoint, "
            "the dense run must have been trained with at least that validation_size, or the "
            "reward set would hold some of its training images)")


def calibration_images(config: ml_collections.ConfigDict, splits: Splits) -> np.ndarray | None:
    """The ``prune.bn_calibration`` training images (None when 0); a ``PruneError`` naming
    the field when the training split holds fewer."""
    n = config.prune.bn_calibration
    if not n:
        return None
    try:
        return calibration_subset(splits, n, config.seed)
    except DataError as e:
        raise PruneError(
            f"prune.bn_calibration={n}: must be 0 (off) or a number of training images at most "
            f"the {len(splits.train)} of {splits.name}'s training split") from e


def reward_evaluator(config: ml_collections.ConfigDict, model: Any, variables: dict, splits: Splits,
                     graph: Graph, reward_set: Dataset, calibration: np.ndarray | None = None) -> Any:
    """The search's evaluator on ``reward_set``; with ``prune.bn_calibration`` > 0 it
    re-estimates each candidate's BatchNorm statistics on that many training images first
    (``calibration``: those images, when drawn already by ``calibration_images``)."""
    from purl_jax.evaluator import Evaluator

    if calibration is None:
        calibration = calibration_images(config, splits)
    return Evaluator(model, variables, reward_set.images, reward_set.labels, graph=graph,
                     calibration_images=calibration)


def _trainer():
    from purl_jax import train

    return train


def baseline_curves(ctx: PruneContext, sparsities=(0.5, 0.7, 0.8, 0.9, 0.95, 0.98)) -> dict:
    """Reward-set accuracy of every baseline over a sparsity grid (before fine-tuning),
    the reference the search's episodes are plotted against."""
    p = ctx.config.prune
    grid = sorted({*sparsities, *([float(p.target_sparsity)] if "target_sparsity" in p else [])})
    curves = {}
    for name, baseline in baselines.BASELINES.items():
        accuracy = []
        for sparsity in grid:
            masks = baseline(ctx.variables["params"], ctx.base_masks, ctx.graph, sparsity,
                             seed=ctx.config.seed,
                             min_keep_fraction=p.min_keep_fraction)
            accuracy.append(float(ctx.evaluator.evaluate(masks).accuracy))
        curves[name] = dict(sparsity=grid, accuracy=accuracy)
    return dict(baselines=curves)


def export_result(config: ml_collections.ConfigDict, model: Any, variables: dict,
                  graph: Graph, masks: Masks, directory: epath.Path) -> dict:
    """Saves the fine-tuned params with their masks and, when whole channels were pruned,
    the compact model that runs faster; returns what was written and its sizes."""
    meta = dict(model=config.model, model_kwargs=dict(config.model_kwargs),
                dataset=config.dataset)
    out = dict(sparse_storage(variables["params"], masks),
               masked=str(save_export(directory / "masked", variables, masks, meta)))
    channels = channel_masks_from_masks(variables["params"], graph, masks)
    if channels:
        try:
            small, small_vars = compact(model, variables, graph, channels, masks=masks)
        except ExportError as e:
            out["compact_error"] = str(e)
        else:
            # What rebuilds the small model: get_model(name, **model_kwargs).
            attrs = {"widths": {k: int(v) for k, v in dict(small.widths).items()}}
            if getattr(small, "shortcut_maps", None):
                attrs["shortcut_maps"] = {k: list(v) for k, v in dict(small.shortcut_maps).items()}
            out["compact"] = str(save_export(directory / "compact", small_vars, None,
                                             dict(meta, model_kwargs={**meta["model_kwargs"],
                                                                      **attrs})))
            out["compact_params"] = int(sum(x.size for x in jax.tree.leaves(small_vars["params"])))
    return out


def finetune(ctx: PruneContext, masks: Masks, workdir: epath.Path) -> tuple[dict, list[dict], Masks]:
    """Masked fine-tuning of the dense variables (``config.finetune``): the fine-tuned
    variables, per-epoch metrics and the final masks.

    ``finetune.rounds`` > 1 prunes gradually: round r keeps ``masks``' per-layer sparsity
    on Zhu & Gupta's cubic ramp (``masks.gradual_ratios``), by magnitude of the weights
    fine-tuned so far, and fine-tunes ``finetune.epochs`` epochs; the last round reaches
    ``masks``' allocation (the same count per layer, chosen by the latest magnitudes) and
    fine-tunes ``finetune.final_epochs`` epochs if that is set (> 0). Checkpoints go to
    ``workdir/checkpoints/finetune``, a gradual round's to ``workdir/round_<r>/checkpoints/finetune``.
    """
    config, trainer = ctx.config, ctx.trainer or _trainer()
    run = lambda variables, m, where, desc, cfg: trainer.fit(
        ctx.model, variables, ctx.splits, cfg, masks=m, workdir=where, seed=config.seed,
        desc=desc, augment=trainer.get_augment(config), teacher=ctx.variables,
        checkpoint_name="finetune")
    rounds = config.finetune.rounds
    if rounds == 1:
        variables, history = run(ctx.variables, masks, workdir, "finetune", config.finetune)
        return variables, history, masks
    layers = masked_layers(ctx.base_masks, ctx.graph)
    final = {l.name: 1.0 - float(np.mean(np.asarray(get_path(masks, l.path)))) for l in layers}
    variables, history = ctx.variables, []
    for r, ratios in enumerate(gradual_ratios(final, rounds), 1):
        masks = magnitude_masks(variables["params"], ctx.base_masks, ctx.graph, ratios)
        cfg = config.finetune
        if r == rounds and cfg.final_epochs > 0:
            cfg = ml_collections.ConfigDict({**cfg.to_dict(), "epochs": cfg.final_epochs})
        variables, h = run(variables, masks, workdir / f"round_{r}", f"finetune {r}/{rounds}", cfg)
        history += [dict(record, round=r) for record in h]
    return variables, history, masks


def prune_context(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                  trainer: Any = None) -> PruneContext:
    """What a search needs from ``config``: the model, the dense variables (loaded, or
    trained in ``workdir/dense``), the data, the prunable layers and the reward evaluator."""
    from purl_jax import reward_finetune

    trainer = trainer or _trainer()
    workdir = files.path(workdir)
    model, variables_init, splits, graph = trainer.setup(config)
    if reward_finetune.needs_train_split(config):  # before the dense model is loaded or trained
        reward_finetune.check_train_split(splits)
    reward_set = reward_subset(splits, config.prune.reward_set_size, config.seed)
    calibration = calibration_images(config, splits)  # its size is checked against the split
    base = init_masks(variables_init["params"], graph, MaskPolicy(**dict(config.mask_policy)))
    if not masked_layers(base, graph):
        raise PruneError("config.mask_policy leaves no layer to prune")
    # the parts loaded above, so the data is loaded once
    variables = trainer.load_dense(config, workdir, parts=(model, variables_init, splits, graph))
    check_matches(variables, variables_init, where=config.dense_checkpoint or str(workdir / "dense"))
    evaluator = reward_evaluator(config, model, variables, splits, graph, reward_set, calibration)
    return PruneContext(config, workdir, model, variables, splits, graph, base, reward_set,
                        evaluator, trainer)


def prune(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
          trainer: Any = None) -> dict:
    """``purl-jax prune``: search masks with ``config.prune.algorithm``, fine-tune them
    (``config.finetune``) and report dense vs pruned test accuracy, sparsity, parameter
    and MAC reductions. ``trainer`` (default ``purl_jax.train``) is injectable for tests.
    Writes ``config.json``, ``curves.json``, ``result.json``, the report
    (``purl_jax.report``) and the export (``export/``) in ``workdir`` (local or ``gs://``;
    in a multi-process run process 0 writes them); returns the result with the ``masks``
    and the fine-tuned ``variables``."""
    from purl_jax import report

    validate(config)
    workdir = files.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    files.write_text(workdir / "config.json", config.to_json_best_effort(indent=2) + "\n")
    start = time.time()
    ctx = prune_context(config, workdir, trainer=trainer)
    model, variables, splits, graph, evaluator = ctx.model, ctx.variables, ctx.splits, ctx.graph, ctx.evaluator
    trainer, eval_bs = ctx.trainer, config.train.eval_batch_size
    dense_test = trainer.evaluate_dataset(model, variables, splits.test, batch_size=eval_bs)
    t_search = time.time()
    found = get_algorithm(config.prune.algorithm)(ctx)
    search_seconds = time.time() - t_search
    masks = found.pop("masks")
    if config.prune.baseline_curves:
        files.write_text(workdir / "curves.json", json.dumps(baseline_curves(ctx)) + "\n")
    reward_scores = evaluator.evaluate(masks)
    finetuned, history, masks = finetune(ctx, masks, workdir / "finetune")
    pruned_test = trainer.evaluate_dataset(model, finetuned, splits.test, masks=masks,
                                           batch_size=eval_bs)
    exported = export_result(config, model, finetuned, graph, masks, workdir / "export")
    s = summary(variables["params"], masks, graph)
    result = dict(
        model=config.model, dataset=config.dataset, algorithm=config.prune.algorithm,
        # PuRL and the baselines; the constrained search reports its budget instead
        **({"target_sparsity": config.prune.target_sparsity} if "target_sparsity" in config.prune else {}),
        dense_test_accuracy=dense_test["accuracy"], pruned_test_accuracy=pruned_test["accuracy"],
        reward_set_accuracy_before_finetune=float(reward_scores.accuracy),
        sparsity=s["sparsity"], params=s["params"], kept_params=s["kept_params"],
        param_reduction=s["params"] / max(s["kept_params"], 1),
        flops_kept=float(flops_cost(graph)(masks)), macs=s["macs"], kept_macs=s["kept_macs"],
        layer_sparsity={k: v["sparsity"] for k, v in s["layers"].items() if v["masked"]},
        search_seconds=round(search_seconds, 1), seconds=round(time.time() - start, 1),
        finetune_history=history, export=exported, **found,
    )
    result["flop_reduction"] = 1.0 / max(result["flops_kept"], 1e-12)
    files.write_text(workdir / "result.json", json.dumps(result, indent=2) + "\n")
    if files.is_writer():
        report.write_report(workdir)
    print(format_table(result))
    return {**result, "masks": masks, "variables": finetuned}


def format_table(r: dict) -> str:
    rows = [
        ("", "dense", f"pruned ({r['algorithm']})"),
        ("test accuracy", f"{r['dense_test_accuracy']:.4f}", f"{r['pruned_test_accuracy']:.4f}"),
        ("sparsity (masked)", "0", f"{r['sparsity']:.4f}"),
        ("parameters", f"{r['params']:,}", f"{r['kept_params']:,} ({r['param_reduction']:.1f}x fewer)"),
        ("MACs", f"{r['macs']:,}", f"{r['kept_macs']:,} ({r['flop_reduction']:.1f}x fewer)"),
    ]
    if "budget" in r:  # the constrained search: its cost as it measured it, against the budget
        rows.append((f"{r.get('cost_name', 'cost')} / budget", "", f"{r['cost']:.4f} / {r['budget']:.4f}"))
    return "\n".join(f"{a:<20}{b:>14}  {c}" for a, b, c in rows)


def purl_defaults(target_sparsity: float, episodes: int) -> ml_collections.ConfigDict:
    """``config.prune`` for PuRL; the reconstructed defaults are marked."""
    from purl_jax.reward_finetune import defaults as reward_finetune_defaults

    return ml_collections.ConfigDict(dict(
        algorithm="purl",
        target_sparsity=target_sparsity,
        accuracy_tolerance=0.01,  # reconstructed: A_target = dense reward-set accuracy - 1 point
        beta=5.0,
        reward_mode="dense",  # or "terminal" (AMC-style ablation)
        action_mode="threshold",  # PuRL: |w| < alpha * std(w); or "sparsity", "global",
        # "anchored" (ours; actions are then factors on global magnitude's kept share)
        actions=ml_collections.config_dict.placeholder(tuple),  # None: the mode's grid,
        # env.action_grid (threshold: PuRL's alphas 0.0, 0.1, ..., 2.2; reconstructed)
        passes=1,  # > 1: QLP-style repeated visits
        project="scale",  # ours: the best allocation moved to exactly target_sparsity
        # (baselines.PROJECTIONS: "scale" keeps its shape, "global" by one magnitude
        # ranking over all layers; or "none")
        select="reward",  # the best episode by hinge reward; "projected" (ours): by the
        # reward-set accuracy of its masks after ``project``; "finetuned" (ours): of the
        # ``select_candidates`` best by "projected", the one most accurate on the validation
        # split after ``select_steps`` masked SGD steps each (as the constrained search)
        select_candidates=8,
        select_steps=100,
        max_layer_sparsity=1.0,  # ours: < 1 caps every action and the projection per layer
        episodes=episodes,
        reward_set_size=1000,  # reconstructed; drawn from validation
        bn_calibration=0,  # ours: training images to re-estimate BatchNorm statistics per candidate
        reward_finetune=reward_finetune_defaults(),  # paper's option: masked SGD steps before scoring (off)
        experience="all_actions",  # or "taken"
        checkpoint_every=1,
        min_keep_fraction=0.0005,  # global_min baseline
        progress=True,
        baseline_curves=True,  # curves.json: the baselines' reward-set accuracy over sparsity
        dqn=dataclasses.asdict(DQNConfig()),
    ))


import purl_jax.constrained  # noqa: E402,F401  (registers the "constrained" algorithm)
