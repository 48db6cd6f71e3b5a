import jax
import jax.numpy as jnp
import pytest

from purl_jax.graph import analyze
from purl_jax.models import available_models, get_model, register

# Published parameter counts and dense MACs (conv + dense layers), at the given input.
REFERENCE = {
    # name: (input, classes, params, MMACs or None)
    "lenet_300_100": ((28, 28, 1), 10, 266_610, 0.2662),
    "lenet5": ((28, 28, 1), 10, 431_080, 2.293),
    "resnet20": ((32, 32, 3), 10, 269_722, 40.55),  # He et al.: 0.27M, ~41M
    "resnet32": ((32, 32, 3), 10, 464_154, 68.86),
    "resnet56": ((32, 32, 3), 10, 853_018, 125.5),
    "vgg11": ((32, 32, 3), 10, 9_228_362, 152.8),
    "vgg13": ((32, 32, 3), 10, 9_413_066, 228.3),
    "vgg16": ((32, 32, 3), 10, 14_724_042, 313.2),
    "vgg19": ((32, 32, 3), 10, 20_035_018, 398.1),
    "resnet18": ((224, 224, 3), 1000, 11_689_512, 1814.1),
    "resnet34": ((224, 224, 3), 1000, 21_797_672, 3663.8),
    "resnet50": ((224, 224, 3), 1000, 25_557_032, 4089.2),  # ~4.1 GMACs
    "mobilenet_v2": ((224, 224, 3), 1000, 3_504_872, 300.8),  # ~300 MMACs
}


def test_registry_lists_every_reference_model():
    assert set(REFERENCE) <= set(available_models())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameter_count_output_shape_and_macs(name):
    shape, classes, params, mmacs = REFERENCE[name]
    model = get_model(name, num_classes=classes)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((2, *shape)))
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == params
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, jnp.zeros((2, *shape)))
    assert out.shape == (2, classes)
    graph = analyze(model, variables, shape)
    assert graph.dense_macs / 1e6 == pytest.approx(mmacs, rel=2e-3)


def test_mobilenet_width_multiplier_changes_size():
    small = get_model("mobilenet_v2", num_classes=10, width_multiplier=0.5)
    v = jax.eval_shape(small.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    n = sum(x.size for x in jax.tree.leaves(v["params"]))
    assert 600_000 < n < 1_000_000  # 0.5x MobileNet-V2 with 10 classes: ~0.7M


def test_models_run_in_train_mode_and_update_batch_stats():
    model = get_model("resnet20")
    v = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    logits, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (4, 10)
    before = v["batch_stats"]["bn_init"]["mean"]
    assert not jnp.allclose(before, updates["batch_stats"]["bn_init"]["mean"])


def test_unknown_model_names_the_alternatives():
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*resnet20"):
        get_model("resnet21")


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        get_model("lenet5", num_classes=0)


def test_register_user_model_and_refuse_duplicates():
    import flax.linen as nn

    class Tiny(nn.Module):
        num_classes: int = 10

        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(self.num_classes)(x.reshape((x.shape[0], -1)))

    register("tiny_test_model", Tiny)
    assert isinstance(get_model("tiny_test_model", num_classes=3), Tiny)
    with pytest.raises(ValueError, match="already registered"):
        register("tiny_test_model", Tiny)
