"""PuRL on Caffe LeNet-5 / embedded MNIST: the README's main job (about 10 minutes on 2 CPU cores).

    purl-jax prune --config configs/lenet5_mnist_purl.py --workdir runs/lenet5_purl

Trains the dense net (3 epochs, Adam), runs 40 DQN episodes of 2 passes over the 4 layers
(threshold actions alpha in {0, 0.1, ..., 2.2}, per-step hinge reward towards 98% sparsity,
500 validation images as the reward set), fine-tunes the best masks 3 epochs and prints
dense vs pruned test accuracy. Measured: dense 99.16% test accuracy; its first 8
(exploring) episodes ended at 70-99% sparsity with 10-63% reward-set accuracy before
fine-tuning; a complete run's pruned accuracy is not yet recorded. Under a 4x-contended 2-core machine an episode took ~22 s, so the 10-minute
target holds only on an idle machine. All four layers are pruned, as in Han et al.
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
