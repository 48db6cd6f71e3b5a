"""PuRL on LeNet-300-100 / embedded MNIST (a few minutes on 2 CPU cores).

    purl-jax prune --config configs/lenet300_mnist_purl.py --workdir runs/lenet300_purl

Dense 5 epochs (Adam), 80 episodes of 2 passes over the 3 layers towards 95% sparsity,
1000 validation images as the reward set, 3 epochs of masked fine-tuning. Target (issue 4):
>= 95% sparsity within 0.1 point of dense test error; not yet measured.
"""

from purl_jax.search import purl_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config()
    c.model = "lenet_300_100"
    c.dataset = "mnist"
    c.mask_policy = dict(exclude_first=False, exclude_last=False, exclude=())
    c.train.update(optimizer="adam", learning_rate=1e-3, weight_decay=0.0, nesterov=False,
                   schedule="cosine", epochs=5, batch_size=128, checkpoint_every_steps=200)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=1e-3, label_smoothing=0.1, epochs=15)
    c.prune = purl_defaults(target_sparsity=0.95, episodes=40)
    c.prune.update(passes=2)
    c.prune.dqn.update(epsilon_decay_steps=120)
    return c
