"""Structured (channel) constrained RL pruning of ResNet-20 / Fashion-MNIST under a FLOPs budget.

    purl-jax prune --config configs/resnet20_fmnist_constrained.py --workdir runs/resnet20_fmnist_constrained \
        --config.data_dir=../shared/data/fashion_mnist

One step per prunable channel group (the residual streams stay whole with the stem and
head excluded); the action is a keep value per output channel (< 0.5 = pruned), the
budget 50% of the dense MACs (``prune.cost = "flops"``, ``prune.budget = 0.5``). Dense
training and fine-tuning as ``resnet20_fmnist.py``. Expected: MACs <= 50% of dense
(guaranteed), test accuracy a little under the dense ~92%.
"""

from pathlib import Path

from purl_jax.constrained import constrained_defaults
from purl_jax.train import load_config


def get_config():
    c = load_config(Path(__file__).with_name("resnet20_fmnist.py"))  # the dense recipe
    c.prune = constrained_defaults(0.5, cost="flops", action="channel", iterations=40, num_envs=16)
    c.prune.reward_set_size = 500
    c.prune.bn_calibration = 128  # BN statistics per candidate: 90%-pruned 10% -> 69% before FT
    c.prune.ppo.init_log_std = -2.0  # explore near the uniform start (std 0.14, not 0.37)
    # no step removes a whole layer: before fine-tuning the reward prefers emptying the last
    # residual blocks (the identity path remains), which fine-tuning cannot recover from
    c.prune.max_fraction = 0.97
    return c
