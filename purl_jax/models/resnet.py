"""ResNets: CIFAR (He et al. 2016, option-A shortcuts) and ImageNet (torchvision layout).

Shortcut decisions are made from the architecture, not from tensor shapes, so a compact
export with fewer channels keeps exactly the same topology.
"""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from purl_jax.models.common import Widths, sub_widths, width


def _batch_norm(train: bool, name: str, zero_init: bool = False) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


_conv = partial(nn.Conv, use_bias=False, kernel_init=nn.initializers.kaiming_normal())


def _option_a_shortcut(x: jnp.ndarray, strides: int, features: int,
                       channel_map: tuple[int, ...] | None) -> jnp.ndarray:
    """Strided identity with zero channels: padded evenly on both sides (He et al.), or,
    in a compact export, placed by ``channel_map`` (-1 = a zero channel)."""
    x = x[:, ::strides, ::strides, :]
    if channel_map is None:
        missing = features - x.shape[-1]
        return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (missing // 2, missing - missing // 2)))
    index = np.asarray(channel_map)
    padded = jnp.concatenate([x, jnp.zeros_like(x[..., :1])], axis=-1)
    return padded[..., np.where(index >= 0, index, x.shape[-1])]


class BasicBlock(nn.Module):
    """Two 3x3 convs. When the block changes shape (``downsample``), the shortcut is "A"
    (strided identity, zero-padded channels, parameter-free: He et al.'s CIFAR nets) or
    "B" (1x1 projection)."""

    features: int
    strides: int = 1
    downsample: bool = False
    shortcut: str = "B"
    widths: Widths = None
    shortcut_map: tuple[int, ...] | None = None  # compact option-A shortcuts only

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = width(self.widths, "conv2", self.features)
        y = _conv(width(self.widths, "conv1", self.features), (3, 3), self.strides, padding=1,
                  name="conv1")(x)
        y = nn.relu(_batch_norm(train, "bn1")(y))
        y = _conv(out, (3, 3), 1, padding=1, name="conv2")(y)
        y = _batch_norm(train, "bn2")(y)
        if self.downsample:
            if self.shortcut == "A":
                x = _option_a_shortcut(x, self.strides, out, self.shortcut_map)
            else:
                x = _conv(out, (1, 1), self.strides, name="proj_conv")(x)
                x = _batch_norm(train, "proj_bn")(x)
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's ResNet v1.5), 1x1 expand by 4."""

    features: int
    strides: int = 1
    projection: bool = False
    widths: Widths = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        out = width(self.widths, "conv3", self.features * 4)
        y = _conv(width(self.widths, "conv1", self.features), (1, 1), name="conv1")(x)
        y = nn.relu(_batch_norm(train, "bn1")(y))
        y = _conv(width(self.widths, "conv2", self.features), (3, 3), self.strides, padding=1,
                  name="conv2")(y)
        y = nn.relu(_batch_norm(train, "bn2")(y))
        y = _conv(out, (1, 1), name="conv3")(y)
        y = _batch_norm(train, "bn3", zero_init=True)(y)
        if self.projection:
            x = _conv(out, (1, 1), self.strides, name="proj_conv")(x)
            x = _batch_norm(train, "proj_bn")(x)
        return nn.relu(x + y)


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, n basic blocks per stage.

    ResNet-20: 269,722 parameters (He et al.'s "0.27M"), ~41 MMACs at 32x32.
    """

    depth: int = 20
    num_classes: int = 10
    width: int = 16
    widths: Widths = None
    shortcut_maps: dict[str, tuple[int, ...]] | None = None  # compact export only

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
        n = (self.depth - 2) // 6
        x = _conv(width(self.widths, "conv_init", self.width), (3, 3), padding=1,
                  name="conv_init")(x)
        x = nn.relu(_batch_norm(train, "bn_init")(x))
        for stage in range(3):
            for block in range(n):
                name = f"stage{stage + 1}_block{block + 1}"
                down = stage > 0 and block == 0
                x = BasicBlock(
                    self.width * 2**stage, 2 if down else 1, downsample=down, shortcut="A",
                    widths=sub_widths(self.widths, name),
                    shortcut_map=(self.shortcut_maps or {}).get(name), name=name,
                )(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


_IMAGENET_STAGES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


class ResNet(nn.Module):
    """ImageNet ResNet-18/34 (basic blocks) and -50 (bottlenecks), torchvision layout.

    ResNet-50: 25,557,032 parameters, ~4.1 GMACs at 224x224.
    """

    depth: int = 50
    num_classes: int = 1000
    widths: Widths = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.depth not in _IMAGENET_STAGES:
            raise ValueError(f"ResNet depth must be one of {sorted(_IMAGENET_STAGES)}")
        x = _conv(width(self.widths, "conv_init", 64), (7, 7), 2, padding=3, name="conv_init")(x)
        x = nn.relu(_batch_norm(train, "bn_init")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, blocks in enumerate(_IMAGENET_STAGES[self.depth]):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                name = f"stage{stage + 1}_block{block + 1}"
                widths = sub_widths(self.widths, name)
                if self.depth >= 50:
                    x = Bottleneck(64 * 2**stage, strides, projection=block == 0,
                                   widths=widths, name=name)(x, train)
                else:
                    x = BasicBlock(64 * 2**stage, strides, downsample=strides != 1,
                                   shortcut="B", widths=widths, name=name)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)
