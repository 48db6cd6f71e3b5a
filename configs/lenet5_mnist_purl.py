"""PuRL on Caffe LeNet-5 / embedded MNIST: the README's main job.

    purl-jax prune --config configs/lenet5_mnist_purl.py --workdir runs/lenet5_purl

Trains the dense net (3 epochs, Adam), runs 40 DQN episodes of 2 passes over the 4 layers
(threshold actions alpha in {0, 0.1, ..., 2.2}, per-step hinge reward towards 98% sparsity,
500 validation images as the reward set, epsilon decaying over the first half), projects
the best allocation to exactly 98% (``prune.project``), fine-tunes 3 epochs (Adam 5e-4,
cosine) and prints dense vs pruned test accuracy. All four layers are pruned (Han et al.).
Measured on 2 idle cores (BENCHMARKS.md, "README main job"): 2 min 56 s in all. With the
shared dense checkpoint runs/lenet5_mnist (99.23%) and 5 one-shot fine-tuning epochs, 98%
sparsity gave 98.38% test (global magnitude: 98.40%), error 1.62% where the issue's
"dense + 0.1 point" allows 0.87%: not met by this quick recipe. Gradual fine-tuning over 8
rounds of 4 epochs (32 epochs, about 14 min more on 2 idle cores) meets it for 2 seeds of 3:

    purl-jax prune --config configs/lenet5_mnist_purl.py --workdir runs/lenet5_purl_r8 \
        --config.finetune.rounds=8 --config.finetune.epochs=4

gave 99.19%, 99.03% and 99.17% at 98% sparsity with seeds 0, 1, 2 (mean 99.13%, the bound;
global magnitude: 99.17%, 99.15%, 99.04%, mean 99.12%; BENCHMARKS.md, "Session 7", run on
the shared dense checkpoint). On the clean split with weight decay 0.3 and a 12-epoch last
round, PuRL gave 99.08 +- 0.09% and global magnitude 99.18 +- 0.01% (BENCHMARKS.md, "Session 16").
Searching around global magnitude's cut and selecting by accuracy after projection (ours)
meets the target with every seed, 99.19 +- 0.02% (BENCHMARKS.md, "Session 17"):

    purl-jax prune --config configs/lenet5_mnist_purl.py --workdir runs/lenet5_purl_global \
        --config.prune.action_mode=global --config.prune.select=projected \
        '--config.prune.actions=(0.5,0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5)' \
        --config.finetune.rounds=8 --config.finetune.epochs=4 \
        --config.finetune.weight_decay=0.3 --config.finetune.final_epochs=12
"""

from purl_jax.search import purl_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config()
    c.model = "lenet5"
    c.dataset = "mnist"
    c.mask_policy = dict(exclude_first=False, exclude_last=False, exclude=())
    c.train.update(optimizer="adam", learning_rate=1e-3, weight_decay=0.0, nesterov=False,
                   schedule="cosine", epochs=3, batch_size=128, checkpoint_every_steps=200)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=5e-4, epochs=3)
    c.prune = purl_defaults(target_sparsity=0.98, episodes=40)
    c.prune.update(passes=2, reward_set_size=500)
    c.prune.dqn.update(epsilon_decay_steps=160, min_replay=64)
    return c
