"""PuRL on ResNet-20 / Fashion-MNIST towards 90% sparsity (about 1.5 h on 2 CPU cores).

    purl-jax prune --config configs/resnet20_fmnist_purl.py --workdir runs/resnet20_purl \
        --config.data_dir=../shared/data/fashion_mnist

Dense training as configs/resnet20_fmnist.py (or point ``--config.dense_checkpoint`` at a
``purl-jax train`` workdir of it), 30 episodes over the 18 inner conv layers (first conv
and classifier stay dense), 500 validation images as the reward set, then gradual masked
fine-tuning: 3 rounds of 2 epochs towards the allocation (``finetune.rounds``). Expected:
within 1 point of the dense accuracy at 90% sparsity. From the 93.66% dense model: 92.77%
(seed 0) and 92.72% (seed 1), global magnitude 92.78% and 92.84% with the same fine-tuning;
from a 93.43% one, 92.52% (BENCHMARKS.md, "Fashion-MNIST ResNet-20 at 90%").
"""

from pathlib import Path

from purl_jax.search import purl_defaults
from purl_jax.train import load_config


def get_config():
    c = load_config(Path(__file__).with_name("resnet20_fmnist.py"))  # the dense recipe
    c.prune = purl_defaults(target_sparsity=0.90, episodes=30)
    c.prune.update(reward_set_size=500)
    c.prune.bn_calibration = 128  # BN statistics per candidate: 90%-pruned 10% -> 69% before FT
    c.prune.dqn.update(epsilon_decay_steps=400)
    c.finetune.update(rounds=3, epochs=2)  # gradual: +0.16 (global) / +0.49 (PuRL) over one-shot 3 epochs
    return c
