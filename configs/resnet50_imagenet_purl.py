"""PuRL on ResNet-50 / ImageNet (paper scale: GPUs/TPUs and a prepared imagenet2012; not
runnable on the project's CPU machine).

    purl-jax prune --config configs/resnet50_imagenet_purl.py --workdir runs/resnet50_purl \
        --config.dense_checkpoint=runs/resnet50_dense --config.data_dir=$TFDS_DIR

Reference (PuRL paper): > 80% sparsity at 75.37% top-1. Threshold actions alpha in
{0, ..., 2.2}, per-step hinge reward (beta 5) towards 80% sparsity, 5,000 validation
images as the reward set. Fine-tuning follows Gupta et al.'s global-magnitude study (SGD
momentum 0.875, lr 0.1024 at batch 256 scaled linearly, cosine, label smoothing 0.1);
the episode count and DQN settings are reconstructed.
"""

from purl_jax.search import purl_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config(augment=False)
    c.model = "resnet50"
    c.dataset = "imagenet2012"
    c.validation_size = 10_000  # held in memory; train and test are streamed
    c.image_size = 224
    c.train.update(optimizer="sgd", learning_rate=0.1024 * 4, momentum=0.875, nesterov=False,
                   weight_decay=3.0517578125e-05, schedule="cosine", warmup_epochs=5,
                   epochs=90, batch_size=1024, label_smoothing=0.1, eval_batch_size=500,
                   checkpoint_every_steps=1000)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(warmup_epochs=0, epochs=30)
    c.prune = purl_defaults(target_sparsity=0.80, episodes=150)
    c.prune.update(reward_set_size=5000, accuracy_tolerance=0.02)
    c.prune.dqn.update(epsilon_decay_steps=3000, buffer_size=100_000)
    return c
