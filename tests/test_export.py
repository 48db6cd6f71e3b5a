import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import built, zoo
from purl_jax import masks as M
from purl_jax.export import ExportError, compact, load_export, save_export, sparse_storage
from purl_jax.graph import analyze


def _random_channel_masks(graph, seed=3):
    cm = M.init_channel_masks(graph, M.MaskPolicy(exclude_first=False))
    keys = jax.random.split(jax.random.key(seed), len(cm))
    return {n: jax.random.bernoulli(k, 0.5, m.shape).at[0].set(True)
            for k, (n, m) in zip(keys, cm.items())}


@pytest.mark.parametrize("name", zoo())
def test_compact_model_equals_masked_model(name):
    model, v, graph, shape = built(name)
    cm = _random_channel_masks(graph)
    full = M.channel_masks_to_masks(v["params"], graph, cm)
    x = jax.random.normal(jax.random.key(4), (3, *shape))
    masked = jax.jit(model.apply)({**v, "params": M.apply_masks(v["params"], full)}, x)
    small, small_vars = compact(model, v, graph, cm)
    out = jax.jit(small.apply)(small_vars, x)
    np.testing.assert_allclose(out, masked, rtol=1e-4, atol=1e-4 * float(jnp.abs(masked).max()))
    kept = sum(int(m.sum()) for m in cm.values())
    total = sum(m.size for m in cm.values())
    assert kept < total
    n_small = sum(a.size for a in jax.tree.leaves(small_vars["params"]))
    n_dense = sum(a.size for a in jax.tree.leaves(v["params"]))
    assert n_small < n_dense
    # The rebuilt model's own graph has exactly the kept widths.
    small_graph = analyze(small, small_vars, shape)
    assert small_graph.dense_macs < graph.dense_macs


def test_compact_keeps_unstructured_zeros_and_untouched_model_is_identical():
    model, v, graph, shape = built("lenet5")
    base = M.magnitude_masks(v["params"], M.init_masks(v["params"], graph), graph, 0.5)
    cm = {"conv2": jnp.arange(50) % 5 != 0}
    small, sv = compact(model, v, graph, cm, masks=base)
    assert sv["params"]["conv2"]["kernel"].shape == (5, 5, 20, 40)
    assert sv["params"]["fc1"]["kernel"].shape == (640, 500)
    assert float((sv["params"]["fc1"]["kernel"] == 0).mean()) > 0.45
    same, sv2 = compact(model, v, graph, {})
    jax.tree.map(np.testing.assert_array_equal, sv2, v)


def test_export_round_trips_through_orbax(tmp_path):
    model, v, graph, shape = built("resnet20")
    small, sv = compact(model, v, graph, _random_channel_masks(graph))
    masks = M.init_masks(sv["params"], analyze(small, sv, shape))
    path = save_export(tmp_path / "export", sv, masks, {"model": "resnet20"})
    restored, restored_masks, meta = load_export(path, sv)
    jax.tree.map(np.testing.assert_array_equal, restored, sv)
    assert meta == {"model": "resnet20"}
    assert restored_masks["stage1_block1"]["conv1"]["kernel"].dtype == jnp.bool_
    jax.tree.map(np.testing.assert_array_equal, restored_masks, masks)


def test_sparse_storage_counts_values_and_indices():
    _, v, graph, _ = built("lenet_300_100")
    masks = M.magnitude_masks(v["params"], M.init_masks(v["params"], graph), graph, 0.9)
    report = sparse_storage(v["params"], masks)
    assert report["dense_bytes"] == 266_610 * 4
    fc2 = 300 * 100
    nnz = fc2 - round(0.9 * fc2)
    expected_coo = (266_610 - fc2) * 4 + nnz * 8
    assert report["coo_bytes"] == expected_coo
    assert report["bitmask_bytes"] == (266_610 - fc2) * 4 + nnz * 4 + fc2 // 8


def test_model_without_widths_is_refused():
    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.relu(nn.Dense(8, name="a")(x.reshape((x.shape[0], -1))))
            return nn.Dense(2, name="b")(x)

    model = Plain()
    v = model.init(jax.random.key(0), jnp.zeros((1, 4)))
    graph = analyze(model, v, (4,))
    with pytest.raises(ExportError, match="no `widths` attribute"):
        compact(model, v, graph, {"a": jnp.arange(8) < 4})
