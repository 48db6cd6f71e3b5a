"""Paper scale (Malik et al. 2022): VGG-16 / CIFAR-10, at most 10% of the weights kept.

    pip install 'purl-jax[prepare]' && purl-jax data prepare cifar10 --data_dir DATA
    purl-jax prune --config configs/vgg16_cifar10_constrained.py --workdir runs/vgg16_constrained \
        --config.data_dir=DATA

As in the released code: one step per layer (first and last layers stay dense), prune
fractions by magnitude, PPO-Lagrangian with nu = softplus(theta) (initial 1), 16
parallel episodes per update, 10 epochs, clip 0.2, GAE 0.95 / 1.0, action clip
schedule from 0.9, reward on 5000 validation images; then fine-tuning (Adam 3e-4, 40
epochs here for the paper's 25k-40k iterations). Expected (paper): 83-93% of the
parameters removed at about the dense ~93% accuracy; needs an accelerator (hours).
"""

from purl_jax.constrained import constrained_defaults
from purl_jax.train import base_config


def get_config():
    c = base_config(augment=True)
    c.model = "vgg16"
    c.dataset = "cifar10"
    c.validation_size = 5000
    c.train.update(optimizer="sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                   weight_decay=5e-4, schedule="cosine", warmup_epochs=1, epochs=160,
                   batch_size=128, checkpoint_every_steps=1000)
    c.finetune.update(c.train.to_dict())
    c.finetune.update(optimizer="adam", learning_rate=3e-4, weight_decay=0.0, nesterov=False,
                      warmup_epochs=0, epochs=40, batch_size=64)
    c.prune = constrained_defaults(0.1, cost="params", action="layer", iterations=300, num_envs=16)
    c.prune.reward_set_size = 5000
    c.prune.ppo.update(lagrange_lr=0.05, nu_init=1.0)
    return c
