"""ResNets: CIFAR (He et al. 2016, option-A shortcuts) and ImageNet (torchvision layout)."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp


def _batch_norm(train: bool, name: str, zero_init: bool = False) -> nn.BatchNorm:
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        scale_init=nn.initializers.zeros if zero_init else nn.initializers.ones,
        name=name,
    )


_conv = partial(nn.Conv, use_bias=False, kernel_init=nn.initializers.kaiming_normal())


class BasicBlock(nn.Module):
    """Two 3x3 convs. ``shortcut`` is "A" (strided identity, zero-padded channels,
    parameter-free, as in He et al.'s CIFAR nets) or "B" (1x1 projection when shapes change)."""

    features: int
    strides: int = 1
    shortcut: str = "B"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = _conv(self.features, (3, 3), self.strides, padding=1, name="conv1")(x)
        y = nn.relu(_batch_norm(train, "bn1")(y))
        y = _conv(self.features, (3, 3), 1, padding=1, name="conv2")(y)
        y = _batch_norm(train, "bn2")(y)
        if self.strides != 1 or x.shape[-1] != self.features:
            if self.shortcut == "A":
                x = x[:, :: self.strides, :: self.strides, :]
                missing = self.features - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (missing // 2, missing - missing // 2)))
            else:
                x = _conv(self.features, (1, 1), self.strides, name="proj_conv")(x)
                x = _batch_norm(train, "proj_bn")(x)
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as torchvision's ResNet v1.5), 1x1 expand by 4."""

    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        y = _conv(self.features, (1, 1), name="conv1")(x)
        y = nn.relu(_batch_norm(train, "bn1")(y))
        y = _conv(self.features, (3, 3), self.strides, padding=1, name="conv2")(y)
        y = nn.relu(_batch_norm(train, "bn2")(y))
        y = _conv(self.features * 4, (1, 1), name="conv3")(y)
        y = _batch_norm(train, "bn3", zero_init=True)(y)
        if self.strides != 1 or x.shape[-1] != self.features * 4:
            x = _conv(self.features * 4, (1, 1), self.strides, name="proj_conv")(x)
            x = _batch_norm(train, "proj_bn")(x)
        return nn.relu(x + y)


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs: 16/32/64 channels, n basic blocks per stage.

    ResNet-20: 272,474 parameters, ~41 MMACs at 32x32.
    """

    depth: int = 20
    num_classes: int = 10
    width: int = 16

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if (self.depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {self.depth}")
        n = (self.depth - 2) // 6
        x = _conv(self.width, (3, 3), padding=1, name="conv_init")(x)
        x = nn.relu(_batch_norm(train, "bn_init")(x))
        for stage in range(3):
            for block in range(n):
                strides = 2 if stage > 0 and block == 0 else 1
                x = BasicBlock(
                    self.width * 2**stage, strides, shortcut="A",
                    name=f"stage{stage + 1}_block{block + 1}",
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

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.depth not in _IMAGENET_STAGES:
            raise ValueError(f"ResNet depth must be one of {sorted(_IMAGENET_STAGES)}")
        x = _conv(64, (7, 7), 2, padding=3, name="conv_init")(x)
        x = nn.relu(_batch_norm(train, "bn_init")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, blocks in enumerate(_IMAGENET_STAGES[self.depth]):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                name = f"stage{stage + 1}_block{block + 1}"
                if self.depth >= 50:
                    x = Bottleneck(64 * 2**stage, strides, name=name)(x, train)
                else:
                    x = BasicBlock(64 * 2**stage, strides, shortcut="B", name=name)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)
