"""PuRL on MobileNet-V2 / ImageNet (paper scale; not runnable on the project's CPU machine).

    purl-jax prune --config configs/mobilenetv2_imagenet_purl.py --workdir runs/mbv2_purl \
        --config.dense_checkpoint=runs/mbv2_dense --config.data_dir=$TFDS_DIR

The PuRL paper also sparsifies MobileNet-V2 (its numbers are not available here).
Depthwise layers are part of the action space but hold few weights; 50% target sparsity,
threshold actions, per-step hinge reward, 5,000 validation images as the reward set. The
episode count and DQN settings are reconstructed.
"""

from purl_jax.search import purl_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config(augment=False)
    c.model = "mobilenet_v2"
    c.dataset = "imagenet2012"
    c.validation_size = 10_000  # held in memory; train and test are streamed
    c.image_size = 224
    c.train.update(optimizer="sgd", learning_rate=0.2, momentum=0.9, nesterov=True,
                   weight_decay=4e-5, schedule="cosine", warmup_epochs=5, epochs=150,
                   batch_size=1024, label_smoothing=0.1, eval_batch_size=500,
                   checkpoint_every_steps=1000)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(learning_rate=0.02, warmup_epochs=0, epochs=30)
    c.prune = purl_defaults(target_sparsity=0.50, episodes=150)
    c.prune.update(reward_set_size=5000, accuracy_tolerance=0.02)
    c.prune.dqn.update(epsilon_decay_steps=3000, buffer_size=100_000)
    return c
