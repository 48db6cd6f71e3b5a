"""PuRL on ResNet-20 / Fashion-MNIST towards 90% sparsity (about an hour on 2 CPU cores).

    purl-jax prune --config configs/resnet20_fmnist_purl.py --workdir runs/resnet20_purl \
        --config.data_dir=../shared/data/fashion_mnist

Dense training as configs/resnet20_fmnist.py (or point ``--config.dense_checkpoint`` at a
``purl-jax train`` workdir of it), 30 episodes over the 19 inner conv layers (first conv
and classifier stay dense), 500 validation images as the reward set, 3 epochs of masked
fine-tuning. Expected: within ~1 point of the dense ~92-93% at 90% sparsity (not yet
measured here; see BENCHMARKS.md).
"""

from purl_jax.search import purl_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config(augment=dict(crop_padding=2, flip=True))
    c.model = "resnet20"
    c.dataset = "fashion_mnist"
    c.data_dir = "../shared/data/fashion_mnist"
    c.train.update(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                   weight_decay=5e-4, schedule="cosine", warmup_epochs=1, epochs=12,
                   batch_size=128, checkpoint_every_steps=200)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=0.01, warmup_epochs=0, epochs=3)
    c.prune = purl_defaults(target_sparsity=0.90, episodes=30)
    c.prune.update(reward_set_size=500)
    c.prune.dqn.update(epsilon_decay_steps=400)
    return c
