"""Structured (channel) constrained RL pruning of ResNet-20 / Fashion-MNIST under a FLOPs budget.

    purl-jax prune --config configs/resnet20_fmnist_constrained.py --workdir runs/resnet20_fmnist_constrained \
        --config.data_dir=../shared/data/fashion_mnist

One step per prunable channel group (the residual streams stay whole with the stem and
head excluded); the action is a keep value per output channel (< 0.5 = pruned), the
budget 50% of the dense MACs (``prune.cost = "flops"``, ``prune.budget = 0.5``). Dense
training and fine-tuning as ``resnet20_fmnist.py``. Expected: MACs <= 50% of dense
(guaranteed), test accuracy a little under the dense ~92%.
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
    c.prune = constrained_defaults(0.5, cost="flops", action="channel", iterations=40, num_envs=16)
    c.prune.reward_set_size = 500
    return c
