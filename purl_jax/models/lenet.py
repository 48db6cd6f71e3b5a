"""LeNet-300-100 and LeNet-5 (Caffe variant), the networks of Han et al. 2015."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from purl_jax.models.common import Widths, width


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-10 (266,610 parameters on 28x28x1 input)."""

    num_classes: int = 10
    features: tuple[int, ...] = (300, 100)
    widths: Widths = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # no batch norm or dropout
        x = x.reshape((x.shape[0], -1))
        for i, features in enumerate(self.features):
            name = f"fc{i + 1}"
            x = nn.relu(nn.Dense(width(self.widths, name, features), name=name)(x))
        return nn.Dense(self.num_classes, name=f"fc{len(self.features) + 1}")(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, dense 500, dense 10.

    431,080 parameters on 28x28x1 input. ReLUs follow the convolutions too (Caffe's
    prototxt has them only after ip1); the parameter count is the same.
    """

    num_classes: int = 10
    features: tuple[int, int, int] = (20, 50, 500)
    widths: Widths = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train
        c1, c2, f1 = (width(self.widths, n, f) for n, f in zip(("conv1", "conv2", "fc1"),
                                                                  self.features))
        x = nn.relu(nn.Conv(c1, (5, 5), padding="VALID", name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(nn.Conv(c2, (5, 5), padding="VALID", name="conv2")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(f1, name="fc1")(x))
        return nn.Dense(self.num_classes, name="fc2")(x)
