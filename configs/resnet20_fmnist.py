"""ResNet-20 on Fashion-MNIST (28x28; the net ends in global average pooling).

    purl-jax train --config configs/resnet20_fmnist.py --workdir runs/resnet20_fmnist \
        --config.data_dir=../shared/data/fashion_mnist

``data_dir`` (required: Fashion-MNIST is not embedded): a folder with the four original
Fashion-MNIST ``*-ubyte.gz`` files (the path above is this project's machines'), or
``--config.data_source=tfds`` with a TFDS copy from
``purl-jax data prepare fashion_mnist --data_dir DIR`` (and ``--config.data_dir=DIR``).
Measured: 93.66% test accuracy after 12 epochs (SGD-Nesterov, cosine, random crop (2 px) +
flip), about 45 min on an idle 2-core CPU (BENCHMARKS.md, "Training").
"""

from purl_jax.train import base_config


def get_config():
    c = base_config(augment=dict(crop_padding=2, flip=True))
    c.model = "resnet20"
    c.dataset = "fashion_mnist"
    c.train.update(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                   weight_decay=5e-4, schedule="cosine", warmup_epochs=1, epochs=12,
                   batch_size=128, label_smoothing=0.0, checkpoint_every_steps=200)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=0.01, warmup_epochs=0, epochs=3)
    return c
