"""LeNet-300-100 on the embedded MNIST, SGD-Nesterov with a cosine schedule.

    purl-jax train --config configs/lenet300_mnist.py --workdir runs/lenet300_mnist

Expected: >= 98.2% test accuracy after 12 epochs; see BENCHMARKS.md.
"""

from purl_jax.train import base_config


def get_config():
    c = base_config()
    c.model = "lenet_300_100"
    c.dataset = "mnist"
    c.train.update(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                   weight_decay=1e-4, schedule="cosine", warmup_epochs=0, epochs=12,
                   batch_size=128, label_smoothing=0.1, checkpoint_every_steps=2000)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=0.005, epochs=3)
    return c
