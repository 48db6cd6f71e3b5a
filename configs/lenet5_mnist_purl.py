"""PuRL on Caffe LeNet-5 / embedded MNIST: the README's main job.

    purl-jax prune --config configs/lenet5_mnist_purl.py --workdir runs/lenet5_purl

Trains the dense net (3 epochs, Adam), runs 40 DQN episodes of 2 passes over the 4 layers
(per-step hinge reward towards 98% sparsity, 500 validation images as the reward set,
epsilon decaying over the first half), projects the best allocation to exactly 98%
(``prune.project``), fine-tunes it gradually (6 rounds of 2 epochs up Zhu & Gupta's ramp,
the last 6 epochs; Adam 5e-4 with decoupled weight decay 0.3, cosine per round) and prints
dense vs pruned test accuracy. All four layers are pruned (Han et al.). Two options of ours
(BENCHMARKS.md, PuRL "Session 17"): the actions are factors 0.5..1.5 on global magnitude
pruning's cut (``prune.action_mode="global"``) instead of the paper's alpha x std(w), and
the episode returned is the one whose masks, projected to 98%, score best on the reward
set (``prune.select="projected"``).

Measured (BENCHMARKS.md, "README main job", session 27): 99.16% dense, 98.77% pruned at
98% sparsity, 10 min 44 s in all on 2 idle cores (30 s per fine-tuning epoch); seeds 1 and 2
on the same dense model 98.86 and 98.89% (mean 98.84 +- 0.06%).
With the paper's actions and selection (``action_mode="threshold"`` with the alphas
0, 0.1, ..., 2.2 on std(w), ``select="reward"``: ``purl_defaults``) the same fine-tuning gave 98.92, 98.52 and 98.90% on that dense model (seed 1 prunes conv1
80%); the one-shot 3 epochs this config used before, 97.88%. Neither reaches the issue's
dense + 0.1 point bound (99.06% here); the 44-epoch recipe of session 17 does, 99.19 +- 0.02%
over 3 seeds from a 99.23% dense model:

    purl-jax prune --config configs/lenet5_mnist_purl.py --workdir runs/lenet5_purl_f12 \
        --config.finetune.rounds=8 --config.finetune.epochs=4 --config.finetune.final_epochs=12
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
    # gradual: 6 rounds of 2 epochs up the cubic ramp to the searched allocation, the last 6
    c.finetune.update(learning_rate=5e-4, epochs=2, rounds=6, final_epochs=6, weight_decay=0.3)
    c.prune = purl_defaults(target_sparsity=0.98, episodes=40)
    # ours (BENCHMARKS, PuRL "Session 17"): alphas scale global magnitude's cut, and the
    # episode whose projected masks score best is returned
    c.prune.update(passes=2, reward_set_size=500, action_mode="global", select="projected",
                   actions=(0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5))
    c.prune.dqn.update(epsilon_decay_steps=160, min_replay=64)
    return c
