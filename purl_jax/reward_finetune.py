"""Rewards after a short fine-tuning: Malik et al.'s option, and PuRL's per-step one.

A heavily pruned network scores near chance before any training, although some allocations
recover far better than others once trained. With ``prune.reward_finetune.steps`` > 0 each
candidate first trains that many SGD steps with its mask held fixed (the fine-tuning
recipe's masked step, ``train.masked_train_step``), and only then is scored on the reward
set: the constrained search's end-of-episode candidates (``__call__``), or every action of
a PuRL step (``evaluate_layer``). Every candidate starts from the dense weights, so PuRL's
episode carries masks, not fine-tuned weights, from step to step. The number of steps grows
over the search (``growth`` per iteration or episode, up to ``max_steps``): early, cheap
rewards sort out the obviously bad allocations; later ones are closer to what full
fine-tuning will make of a candidate. Every candidate of an iteration trains on the same
batches with the same dropout key, one jitted step at a time from Python, so a growing step
count never recompiles. Not a ``lax.scan`` or ``lax.map`` of steps: XLA:CPU runs a
ResNet-20 train step about 11x slower inside a loop than called alone (jax-ml/jax#12868;
BENCHMARKS.md, "Reward fine-tuning speed").
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from purl_jax.data import Dataset
from purl_jax.evaluator import Scores, recalibrated
from purl_jax.graph import Graph
from purl_jax.masks import Masks, set_path

EVAL_CHUNK = 1000  # images per evaluation call


def defaults() -> ml_collections.ConfigDict:
    """``prune.reward_finetune``: off unless ``steps`` or ``growth`` is set."""
    return ml_collections.ConfigDict(dict(
        steps=0,  # SGD steps before scoring, at iteration 0
        growth=0.0,  # steps added per search iteration
        max_steps=0,  # cap on the steps (0: no cap)
        batch_size=64,
        learning_rate=0.01,  # constant; SGD with the fine-tuning recipe's momentum
    ))


def enabled(cfg: Any) -> bool:
    return bool(cfg.steps or cfg.growth)


def steps_at(cfg: Any, iteration: int) -> int:
    """Fine-tuning steps for the candidates of ``iteration``."""
    steps = int(cfg.steps + cfg.growth * iteration)
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def check(cfg: Any) -> None:
    """Raises ``ValueError`` for settings no search can use."""
    if min(cfg.steps, cfg.growth, cfg.max_steps) < 0:
        raise ValueError(f"prune.reward_finetune: steps, growth and max_steps must be >= 0, got {cfg}")
    if cfg.batch_size < 1 or cfg.learning_rate <= 0:
        raise ValueError("prune.reward_finetune: batch_size must be >= 1 and learning_rate > 0")


class FinetunedScorer:
    """``score(stacked_masks, iteration) -> accuracy[K]`` on ``reward`` after
    ``steps_at(cfg, iteration)`` masked SGD steps per candidate on batches of ``train``
    (then BatchNorm statistics re-estimated on ``calibration_images``, when given).
    With ``graph``, ``evaluate_layer`` scores PuRL's candidates the same way."""

    def __init__(self, model: Any, variables: dict, train: Dataset, reward: Dataset, cfg: Any,
                 recipe: ml_collections.ConfigDict, *, seed: int = 0, calibration_images=None,
                 graph: Graph | None = None):
        from purl_jax import train as train_lib

        check(cfg)
        if cfg.batch_size > len(train):
            raise ValueError(f"prune.reward_finetune.batch_size={cfg.batch_size} is larger than the "
                             f"{len(train)} training examples")
        self.cfg, self.seed, self._train, self._graph = cfg, seed, train, graph
        # only an SGD recipe's L2 carries over: AdamW's decoupled decay (0.3 in some configs)
        # as an L2 term would shrink every weight towards zero within a hundred steps
        decay = recipe.weight_decay if recipe.optimizer == "sgd" else 0.0
        sgd = ml_collections.ConfigDict(dict(recipe.to_dict(), optimizer="sgd", schedule="constant",
                                             warmup_epochs=0, learning_rate=cfg.learning_rate,
                                             weight_decay=decay))
        tx = train_lib.make_optimizer(sgd, steps_per_epoch=1)
        self._variables = variables
        self._reward = reward
        self._calibration = None if calibration_images is None else jnp.asarray(calibration_images)
        self._init = jax.jit(functools.partial(train_lib.init_state, tx))
        self._step = jax.jit(lambda state, masks, images, labels: train_lib.masked_train_step(
            model, tx, recipe.label_smoothing, state, masks, images, labels)[0])
        self._tuned = jax.jit(functools.partial(_tuned, model))
        self._evaluate = functools.partial(train_lib.evaluate_dataset, model)

    def __call__(self, stacked: Masks, iteration: int, desc: str | None = None) -> np.ndarray:
        """``desc``: show a progress bar over the candidates with this label."""
        k = len(jax.tree.leaves(stacked)[0])
        return self._scores([jax.tree.map(lambda m: m[i], stacked) for i in range(k)], iteration,
                            desc).accuracy

    def evaluate_layer(self, masks: Masks, layer_name: str, layer_masks: jax.Array, episode: int) -> Scores:
        """PuRL's ``env.EvaluateLayer``: K candidates equal to ``masks`` except for
        ``layer_name``'s kernel mask, each fine-tuned ``steps_at(cfg, episode)`` steps."""
        if self._graph is None:
            raise ValueError("FinetunedScorer.evaluate_layer needs the model's graph")
        path = self._graph.layer(layer_name).path
        return self._scores([set_path(masks, path, m) for m in layer_masks], episode)

    def _scores(self, candidates: list[Masks], iteration: int, desc: str | None = None) -> Scores:
        steps = steps_at(self.cfg, iteration)
        rng = np.random.default_rng([self.seed, iteration])
        idx = rng.integers(0, len(self._train), (steps, self.cfg.batch_size))
        images, labels = jnp.asarray(self._train.images[idx]), jnp.asarray(self._train.labels[idx])
        key = jax.random.key_data(jax.random.key(self.seed + iteration))
        scores = []
        for masks in tqdm(candidates, desc=desc, disable=desc is None):
            state = self._init(self._variables, masks, key)
            for i in range(steps):
                state = self._step(state, masks, images[i], labels[i])
            # in batches of EVAL_CHUNK images, so a large set (the whole validation split,
            # for ``constrained.select_function``) fits in memory
            r = self._evaluate(self._tuned(state, self._calibration), self._reward, batch_size=EVAL_CHUNK)
            scores.append((r["accuracy"], r["loss"]))
        accuracy, loss = (np.asarray(x, np.float32) for x in zip(*scores))
        return Scores(accuracy, loss)


def needs_train_split(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config`` scores masks after short fine-tuning (``prune.reward_finetune``
    or ``prune.select = "finetuned"``), which reads the training split in random batches."""
    p = config.prune
    return enabled(p.reward_finetune) or p.get("select") == "finetuned"


def check_train_split(splits: Any) -> None:
    """``ValueError`` when ``splits.train`` is streamed: fine-tuned scores draw random
    batches from a training split held in memory."""
    from purl_jax.data import StreamedDataset

    if isinstance(splits.train, StreamedDataset):
        raise ValueError("fine-tuned scores (prune.reward_finetune, prune.select) need a "
                         "training split held in memory")


def from_config(config: ml_collections.ConfigDict, model: Any, variables: dict, splits: Any,
                reward_set: Dataset, evaluator: Any, graph: Graph | None = None) -> FinetunedScorer | None:
    """The scorer of ``config.prune.reward_finetune``, or None when it is off."""
    cfg = config.prune.reward_finetune
    if not enabled(cfg):
        return None
    return scorer(config, cfg, model, variables, splits, reward_set, evaluator.calibration_images, graph)


def scorer(config: ml_collections.ConfigDict, cfg: Any, model: Any, variables: dict, splits: Any,
           reward: Dataset, calibration_images=None, graph: Graph | None = None) -> FinetunedScorer:
    """A ``FinetunedScorer`` with ``cfg``'s steps, training on ``splits.train`` with the
    config's fine-tuning recipe and seed, scoring on ``reward``."""
    check_train_split(splits)
    return FinetunedScorer(model, variables, splits.train, reward, cfg, config.finetune,
                           seed=config.seed, calibration_images=calibration_images, graph=graph)


def _tuned(model, state, calibration):
    tuned = {"params": state["params"], **state["model_state"]}
    if calibration is not None:  # a few steps move BatchNorm's running averages only a little
        tuned = recalibrated(model, tuned, calibration)
    return tuned
