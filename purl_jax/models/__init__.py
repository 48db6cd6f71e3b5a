"""Model zoo: pure-functional Flax linen models picked by name.

Every model is called as ``model.apply(variables, x, train=...)`` on NHWC inputs and
returns logits. ``get_model("resnet20", num_classes=10)`` builds one; ``register``
adds a user model under a new name so configs can pick it too.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from purl_jax.models.lenet import LeNet5, LeNet300100
from purl_jax.models.mobilenet import MobileNetV2
from purl_jax.models.resnet import ResNet, ResNetCifar
from purl_jax.models.vgg import VGG

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str, factory: ModelFactory) -> None:
    """Registers ``factory(num_classes=..., **kwargs) -> nn.Module`` under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory


def available_models() -> list[str]:
    """The registered model names, for ``get_model`` and configs' ``model`` field."""
    return sorted(_REGISTRY)


def get_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Builds the model registered as ``name``."""
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}; available models: {', '.join(available_models())}"
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


register("lenet_300_100", LeNet300100)
register("lenet5", LeNet5)
for _depth in (11, 13, 16, 19):
    register(f"vgg{_depth}", lambda _d=_depth, **kw: VGG(depth=_d, **kw))
for _depth in (20, 32, 56):
    register(f"resnet{_depth}", lambda _d=_depth, **kw: ResNetCifar(depth=_d, **kw))
for _depth in (18, 34, 50):
    register(f"resnet{_depth}", lambda _d=_depth, **kw: ResNet(depth=_d, **kw))
register("mobilenet_v2", MobileNetV2)

__all__ = [
    "LeNet300100",
    "LeNet5",
    "MobileNetV2",
    "ResNet",
    "ResNetCifar",
    "VGG",
    "available_models",
    "get_model",
    "register",
]
