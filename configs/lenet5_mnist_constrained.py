"""Constrained RL pruning of Caffe LeNet-5 / embedded MNIST under a kept-parameters budget.

    purl-jax prune --config configs/lenet5_mnist_constrained.py --workdir runs/lenet5_constrained

Trains the dense net (3 epochs, Adam), then PPO-Lagrangian searches per-layer magnitude
pruning fractions of conv2 and fc1 (first and last layers stay dense) so that at most 10%
of the parameters are kept (``prune.budget = 0.1``), 60 iterations x 16 parallel episodes,
reward = accuracy on 1000 validation images; fine-tunes the masks 3 epochs. Expected:
kept params <= 10% (always: the masks are projected onto the budget), test accuracy ~98.5-99%.
A sweep: ``--config.prune.budgets='(0.2,0.1,0.05)'`` adds ``front.{json,png}`` (every
budget searched, fine-tuned and tested), and ``--config.prune.front_baselines="('global',)"``
global magnitude pruning at the same budgets, fine-tuned alike; the iterations of
``prune.budget`` are logged to ``search/metrics.jsonl``.
"""

from purl_jax.constrained import constrained_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config()
    c.model = "lenet5"
    c.dataset = "mnist"
    c.train.update(optimizer="adam", learning_rate=1e-3, weight_decay=0.0, nesterov=False,
                   schedule="cosine", epochs=3, batch_size=128, checkpoint_every_steps=200)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=5e-4, epochs=3)
    c.prune = constrained_defaults(0.1, cost="params", action="layer", iterations=60, num_envs=16)
    return c
