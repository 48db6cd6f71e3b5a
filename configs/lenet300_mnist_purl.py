"""PuRL on LeNet-300-100 / embedded MNIST.

    purl-jax prune --config configs/lenet300_mnist_purl.py --workdir runs/lenet300_purl

Dense 5 epochs (Adam), 40 episodes of 2 passes over the 3 layers towards 95% sparsity
(epsilon decays over the first half), 1000 validation images as the reward set; the best
allocation is projected to exactly 95% (``prune.project``), then 15 epochs of masked
fine-tuning (Adam 1e-3, cosine, label smoothing 0.1: 10 epochs of Adam 5e-4 without
smoothing gave 98.06%). Measured (BENCHMARKS.md "PuRL", shared dense checkpoint
runs/lenet300_mnist, 98.55% test): 95% sparsity at 98.30 +- 0.02% test (3 seeds), i.e.
error 1.70% vs dense 1.45%: the issue's "dense + 0.1 point" target is NOT met; global
magnitude with the same fine-tuning: 98.30 +- 0.04%. Gradual fine-tuning
(``--config.finetune.rounds=8 --config.finetune.epochs=4``): 98.29 +- 0.06% at 95% (global
98.37), 97.63 +- 0.06% at 98% (global 97.50); BENCHMARKS.md, "Session 8".

To meet the target, fine-tune gradually with weight decay (32 epochs, about 1 min more):

    purl-jax prune --config configs/lenet300_mnist_purl.py --workdir runs/lenet300_purl_wd \
        --config.dense_checkpoint=runs/lenet300_mnist \
        --config.finetune.rounds=8 --config.finetune.epochs=4 --config.finetune.weight_decay=0.3

Measured on another 2-core CPU, where that dense model scores 98.60%: 95% sparsity at
98.52 +- 0.03% test (5 seeds, 4 reach the 98.50% target), global magnitude 98.49 +- 0.07%
(BENCHMARKS.md, "Session 9: gradual fine-tuning with weight decay"); from a 98.55% dense
model with every seed's reward set unseen by it, 98.51 +- 0.05% over 10 seeds, 8 reach
98.45% (global 98.53 +- 0.05%; "Session 14" and "Session 15: ten seeds").
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
