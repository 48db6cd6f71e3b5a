"""VGG with batch norm, CIFAR variant: 3x3 convs, five max pools, one linear classifier."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from purl_jax.models.common import Widths, width

# "M" is a 2x2 max pool; integers are 3x3 conv widths (Simonyan & Zisserman, configs A/B/D/E).
VGG_CONFIGS: dict[int, tuple] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """CIFAR VGG-BN (e.g. VGG-16: 14,724,042 parameters for 10 classes).

    The feature map is averaged over space before the classifier, so 28x28 inputs work
    as well as 32x32 (where the map is already 1x1 and the average changes nothing).
    """

    depth: int = 16
    num_classes: int = 10
    config: Sequence | None = None  # overrides VGG_CONFIGS[depth], e.g. for narrower nets
    widths: Widths = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.config is None and self.depth not in VGG_CONFIGS:
            raise ValueError(f"VGG depth must be one of {sorted(VGG_CONFIGS)}, got {self.depth}")
        config = self.config if self.config is not None else VGG_CONFIGS[self.depth]
        i = 0
        for item in config:
            if item == "M":
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
                continue
            i += 1
            features = width(self.widths, f"conv{i}", int(item))
            x = nn.Conv(features, (3, 3), padding="SAME", use_bias=False, name=f"conv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, name=f"bn{i}")(x)
            x = nn.relu(x)
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)
