"""Constrained RL pruning of ResNet-20 / Fashion-MNIST under a *measured latency* budget.

    purl-jax prune --config configs/resnet20_fmnist_latency_constrained.py \
        --workdir runs/resnet20_fmnist_latency --config.data_dir=../shared/data/fashion_mnist

Channel actions; the cost is ``constrained.layer_latency_cost``: every conv / dense layer
timed on this machine at its kept channel counts (a lookup table filled as architectures
appear), relative to dense; budget 0.6. It is measured, noisy and not additive, which is
what the Lagrangian and the measured projection are for. ``prune.cost = "latency"``
times the whole masked model instead (only useful where the backend skips zeros).
Expected: measured latency <= 0.6 of dense (guaranteed), accuracy near the FLOPs config's.
"""

from purl_jax.constrained import constrained_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config(augment=dict(crop_padding=2, flip=True))
    c.model = "resnet20"
    c.dataset = "fashion_mnist"
    c.data_dir = "../shared/data/fashion_mnist"
    c.train.update(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                   weight_decay=5e-4, schedule="cosine", warmup_epochs=1, epochs=12,
                   batch_size=128, label_smoothing=0.0, checkpoint_every_steps=200)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=0.01, warmup_epochs=0, epochs=3)
    c.prune = constrained_defaults(0.6, cost="layer_latency", action="channel", iterations=40,
                                   num_envs=16)
    c.prune.reward_set_size = 500
    return c
