"""LeNet-5 (Caffe) on the embedded MNIST, AdamW with a cosine schedule.

    purl-jax train --config configs/lenet5_mnist.py --workdir runs/lenet5_mnist

Expected: >= 99.0% test accuracy after 4 epochs (about 99.2%); see BENCHMARKS.md.
"""

from purl_jax.train import base_config


def get_config():
    c = base_config()
    c.model = "lenet5"
    c.dataset = "mnist"
    c.train.update(optimizer="adam", learning_rate=1e-3, weight_decay=1e-4, schedule="cosine",
                   warmup_epochs=0, epochs=4, batch_size=128, label_smoothing=0.0,
                   checkpoint_every_steps=1000)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=1e-4, epochs=2)
    return c
