"""Structured (channel) constrained RL pruning of ResNet-20 / Fashion-MNIST under a FLOPs budget.

    purl-jax prune --config configs/resnet20_fmnist_constrained.py --workdir runs/resnet20_fmnist_constrained \
        --config.data_dir=../shared/data/fashion_mnist

One step per prunable channel group (11: each block's inner conv and the residual streams
of stages 2 and 3; stage 1's stream stays whole with the stem); the action is the fraction
of the group's channels to prune, those of least L1 norm (``"channel_l1"``; a keep value
per channel, ``"channel"``, is too many actions for a short search), the budget 50% of the
dense MACs (``prune.cost = "flops"``, ``prune.budget = 0.5``). Dense training and
fine-tuning as ``resnet20_fmnist.py``. Measured (BENCHMARKS.md, Constrained search (f),
through ``benchmarks/constrained_channels.py`` with 30 iterations and 1 fine-tuning epoch):
48.5-49.8% of the dense MACs, 92.56 +- 0.07% test over 3 seeds against 92.49 +- 0.05% for
uniform L1 channel pruning and 93.66% dense. This config's own run (40 iterations, 3
fine-tuning epochs) has not been measured.
"""

from pathlib import Path

from purl_jax.constrained import constrained_defaults
from purl_jax.train import load_config


def get_config():
    c = load_config(Path(__file__).with_name("resnet20_fmnist.py"))  # the dense recipe
    c.prune = constrained_defaults(0.5, cost="flops", action="channel_l1", iterations=40, num_envs=16)
    c.prune.reward_set_size = 500
    c.prune.bn_calibration = 128  # BN statistics per candidate: 90%-pruned 10% -> 69% before FT
    c.prune.ppo.init_log_std = -2.0  # explore near the uniform start (std 0.14, not 0.37)
    # no step removes a whole layer: before fine-tuning the reward prefers emptying the last
    # residual blocks (the identity path remains), which fine-tuning cannot recover from
    c.prune.max_fraction = 0.97
    return c
