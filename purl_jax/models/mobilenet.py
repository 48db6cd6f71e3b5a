"""MobileNet-V2 (Sandler et al. 2018), torchvision layout, with a width multiplier."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from purl_jax.models.common import Widths, sub_widths, width

# (expansion t, output channels c, repeats n, first stride s)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds a channel count to a multiple of ``divisor`` without losing more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _bn(train: bool, name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3, project (1x1); the residual is decided by the
    architecture so a compact export keeps it."""

    features: int
    strides: int
    expansion: int
    residual: bool
    widths: Widths = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = x
        if self.expansion != 1:
            hidden = width(self.widths, "expand_conv", x.shape[-1] * self.expansion)
            y = nn.Conv(hidden, (1, 1), use_bias=False, name="expand_conv")(y)
            y = nn.relu6(_bn(train, "expand_bn")(y))
        hidden = y.shape[-1]  # the depthwise conv keeps its input's channels
        y = nn.Conv(hidden, (3, 3), self.strides, padding=1, feature_group_count=hidden,
                    use_bias=False, name="depthwise_conv")(y)
        y = nn.relu6(_bn(train, "depthwise_bn")(y))
        y = nn.Conv(width(self.widths, "project_conv", self.features), (1, 1), use_bias=False,
                    name="project_conv")(y)
        y = _bn(train, "project_bn")(y)
        if self.residual:
            y = x + y
        return y


class MobileNetV2(nn.Module):
    """MobileNet-V2; width 1.0 at 224x224: 3,504,872 parameters, ~300 MMACs."""

    num_classes: int = 1000
    width_multiplier: float = 1.0
    dropout_rate: float = 0.2
    widths: Widths = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {self.width_multiplier}")
        stem = width(self.widths, "conv_init", make_divisible(32 * self.width_multiplier))
        x = nn.Conv(stem, (3, 3), 2, padding=1, use_bias=False, name="conv_init")(x)
        x = nn.relu6(_bn(train, "bn_init")(x))
        index = 0
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                index += 1
                name = f"block{index}"
                x = InvertedResidual(make_divisible(c * self.width_multiplier),
                                     s if i == 0 else 1, t, residual=i > 0,
                                     widths=sub_widths(self.widths, name), name=name)(x, train)
        last = width(self.widths, "conv_last", make_divisible(1280 * max(1.0, self.width_multiplier)))
        x = nn.Conv(last, (1, 1), use_bias=False, name="conv_last")(x)
        x = nn.relu6(_bn(train, "bn_last")(x))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, name="fc")(x)
