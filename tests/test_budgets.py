import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import built
from purl_jax import budgets as B
from purl_jax import masks as M


def test_params_cost_counts_every_parameter():
    _, v, graph, _ = built("lenet5")
    masks = M.init_masks(v["params"], graph)
    cost = B.params_cost(v["params"])
    assert float(cost(masks)) == 1.0
    pruned = M.magnitude_masks(v["params"], masks, graph, {"fc1": 0.5})
    assert float(B.params_cost(v["params"], relative=False)(pruned)) == 431_080 - 200_000


def test_flops_cost_counts_removed_inputs_of_the_next_layer():
    _, v, graph, _ = built("lenet5")
    cm = {"conv1": jnp.arange(20) < 10}  # half of conv1's channels
    masks = M.channel_masks_to_masks(v["params"], graph, cm)
    macs = float(B.flops_cost(graph, relative=False)(masks))
    conv1, conv2, fc1, fc2 = graph.layers
    expected = conv1.macs / 2 + conv2.macs / 2 + fc1.macs + fc2.macs
    assert macs == pytest.approx(expected)
    assert float(B.flops_cost(graph)(masks)) == pytest.approx(expected / graph.dense_macs)


def test_latency_cost_times_the_model_and_caches_per_architecture():
    model, v, graph, shape = built("lenet5")
    calls = []

    def build(masks):
        calls.append(1)
        return (lambda: jnp.ones(3)), ()

    cost = B.latency_cost(model, v, shape, batch_size=4, repeats=2, build=build)
    masks = M.init_masks(v["params"], graph)
    assert cost(masks) > 0
    cost(masks)
    assert len(calls) == 2  # dense reference once, these masks once
    real = B.latency_cost(model, v, shape, batch_size=4, repeats=2, relative=False)
    assert real(masks) > 0


def test_user_cost_is_checked_and_nan_names_it():
    _, v, graph, _ = built("lenet5")
    masks = M.init_masks(v["params"], graph)

    def my_cost(masks):
        return float("nan")

    with pytest.raises(B.BudgetError, match="my_cost returned nan"):
        B.get_cost(my_cost)(masks)
    with pytest.raises(B.BudgetError, match="one number"):
        B.get_cost(lambda m: np.ones(3))(masks)
    assert B.get_cost(lambda m: 0.25)(masks) == 0.25


def test_unknown_cost_name():
    with pytest.raises(B.BudgetError, match="unknown cost 'energy'"):
        B.get_cost("energy")


def test_unknown_cost_lists_every_name_a_config_accepts():
    with pytest.raises(B.BudgetError) as e:
        B.check_cost("flop")
    assert "'layer_latency'" in str(e.value)
    for name in B.COSTS:  # listed from the names get_cost builds
        assert repr(name) in str(e.value)
        B.check_cost(name)
    _, _, graph, _ = built("lenet5")
    cost = B.get_cost("layer_latency", graph=graph, batch_size=1, repeats=1, levels=2,
                      clock=lambda fn, args: 1.0)
    assert cost(jax.tree.map(lambda _: None, built("lenet5")[1]["params"])) == pytest.approx(1.0)


def test_config_names_a_cost_factory_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_costs.py").write_text(
        "def make_share(model, variables, graph, input_shape):\n"
        "    n = len(graph.layers)\n"
        "    return lambda masks: n / 10\n"
        "not_a_factory = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _, v, graph, _ = built("lenet5")
    masks = M.init_masks(v["params"], graph)
    assert B.get_cost("my_costs:make_share", variables=v, graph=graph)(masks) == len(graph.layers) / 10
    with pytest.raises(B.BudgetError, match="cannot import"):
        B.get_cost("my_costs:missing")
    with pytest.raises(B.BudgetError, match="cannot import"):
        B.get_cost("no_such_module_xyz:f")
    with pytest.raises(B.BudgetError, match="not_a_factory"):
        B.get_cost("my_costs:not_a_factory")


def test_within_budget_compares_in_the_float32_the_costs_are_computed_in():
    from purl_jax import within_budget

    at = float(np.float32(100) / np.float32(1000))  # kept / all, exactly 10% in float32
    assert not at <= 0.1 and within_budget(at, 0.1)  # float64 reads it 1.5e-9 over
    assert not within_budget(np.nextafter(np.float32(0.1), np.float32(1)), 0.1)
    np.testing.assert_array_equal(within_budget(np.array([0.05, at, 0.2]), 0.1), [True, True, False])
