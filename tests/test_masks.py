import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import built, zoo
from purl_jax import masks as M


def test_init_masks_follow_policy_and_params_structure():
    _, v, graph, _ = built("lenet5")
    masks = M.init_masks(v["params"], graph)
    assert masks["conv1"]["kernel"] is None and masks["fc2"]["kernel"] is None  # first, last
    assert masks["conv2"]["kernel"].dtype == jnp.bool_ and masks["conv2"]["bias"] is None
    everything = M.init_masks(v["params"], graph, M.MaskPolicy(False, False))
    assert everything["conv1"]["kernel"].shape == (5, 5, 1, 20)
    only = M.init_masks(v["params"], graph, M.MaskPolicy(False, False, exclude=("^fc",)))
    assert [l.name for l in M.masked_layers(only, graph)] == ["conv1", "conv2"]


def test_apply_masks_zeroes_exactly_the_pruned_weights():
    _, v, graph, _ = built("lenet_300_100")
    masks = M.magnitude_masks(v["params"], M.init_masks(v["params"], graph), graph, 0.7)
    pruned = M.apply_masks(v["params"], masks)
    k, m = v["params"]["fc2"]["kernel"], masks["fc2"]["kernel"]
    np.testing.assert_array_equal(pruned["fc2"]["kernel"], np.where(m, k, 0.0))
    np.testing.assert_array_equal(pruned["fc1"]["bias"], v["params"]["fc1"]["bias"])
    # Pruned weights contribute nothing: changing them leaves the masked model unchanged.
    noisy = jax.tree.map(lambda p: p + 3.0, v["params"])
    x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
    model = built("lenet_300_100")[0]
    a = model.apply({"params": M.apply_masks(noisy, masks)}, x)
    b = model.apply({"params": M.apply_masks(jax.tree.map(
        lambda p, m: p if m is None else jnp.where(m, p, 0.0), noisy, masks,
        is_leaf=lambda t: t is None), masks)}, x)
    np.testing.assert_array_equal(a, b)


def test_magnitude_mask_prunes_exact_count_of_smallest():
    kernel = jax.random.normal(jax.random.key(0), (7, 13))
    mask = M.magnitude_mask(kernel, 0.3)
    assert int((~mask).sum()) == round(0.3 * 91)
    assert jnp.abs(kernel)[~mask].max() <= jnp.abs(kernel)[mask].min()
    jitted = jax.jit(M.magnitude_mask)(kernel, jnp.float32(0.3))
    np.testing.assert_array_equal(mask, jitted)


def test_ascending_ranks_order_ties_by_position():
    values = jnp.array([[0.5, 0.1, 0.5], [0.0, 0.1, 2.0]])
    np.testing.assert_array_equal(M.ascending_ranks(values), [[3, 1, 4], [0, 2, 5]])
    x = jax.random.normal(jax.random.key(2), (50, 7)).round(1)  # many ties
    np.testing.assert_array_equal(M.ascending_ranks(x).reshape(-1),
                                  np.argsort(np.argsort(np.asarray(x).reshape(-1), kind="stable"),
                                             kind="stable"))


@pytest.mark.parametrize("case", range(6))
def test_smallest_selects_like_the_stable_sort(case):
    rng = np.random.default_rng(case)
    x = rng.normal(size=(17, 23)).astype(np.float32)
    if case % 2:
        x = x.round(1)  # the k-th value tied: the cumulative-sum branch
    x[rng.random(x.shape) < 0.1 * case] = 0.0
    x[rng.random(x.shape) < 0.05 * case] = -0.0  # compares equal to 0.0
    x[rng.random(x.shape) < 0.02 * case] = np.inf
    x = jnp.asarray(x)
    ranks = M.ascending_ranks(x)
    for k in (0, 1, 57, 200, x.size - 1, x.size):
        np.testing.assert_array_equal(jax.jit(M.smallest)(x, k), ranks < k, err_msg=f"k={k}")
    # Several arrays at once, two of one size (stacked): each as if alone.
    arrays = [x, x[:, ::-1] * 2, x[:5], jnp.zeros((3, 4))]
    ks = [100, x.size, 31, 6]
    for got, a, k in zip(M.smallest_each(arrays, ks), arrays, ks):
        np.testing.assert_array_equal(got, M.ascending_ranks(a) < k)


def test_threshold_mask_is_alpha_times_std():
    kernel = jax.random.normal(jax.random.key(0), (1000,))
    mask = M.threshold_mask(kernel, 1.0)
    np.testing.assert_array_equal(mask, jnp.abs(kernel) >= jnp.std(kernel))
    assert bool(M.threshold_mask(kernel, 0.0).all())


def test_global_magnitude_hits_target_and_min_keep_prevents_collapse():
    _, v, graph, _ = built("lenet5")
    base = M.init_masks(v["params"], graph, M.MaskPolicy(False, False))
    masks = M.global_magnitude_masks(v["params"], base, graph, 0.99)
    assert M.summary(v["params"], masks, graph)["sparsity"] == pytest.approx(0.99, abs=1e-5)
    reserved = M.global_magnitude_masks(v["params"], base, graph, 0.99, min_keep_fraction=0.001)
    s = M.summary(v["params"], reserved, graph)
    assert s["sparsity"] == pytest.approx(0.99, abs=1e-5)
    keep_min = round(0.001 * sum(l.params for l in graph.layers))
    assert all(layer["kept"] >= min(keep_min, layer["params"]) for layer in s["layers"].values())
    jitted = jax.jit(lambda p, s: M.global_magnitude_masks(p, base, graph, s))(v["params"], 0.99)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), jitted, masks))


def test_global_cut_is_global_magnitude_threshold():
    _, v, graph, _ = built("lenet5")
    base = M.init_masks(v["params"], graph, M.MaskPolicy(False, False))
    layers = M.masked_layers(base, graph)
    kernels = [M.get_path(v["params"], layer.path) for layer in layers]
    masks = M.global_magnitude_masks(v["params"], base, graph, 0.9)
    cut = M.global_cut(kernels, 0.9)
    for layer, kernel in zip(layers, kernels):
        np.testing.assert_array_equal(M.get_path(masks, layer.path), jnp.abs(kernel) >= cut)
    assert M.global_cut(kernels, 0.95) > cut


@pytest.mark.parametrize("name", zoo())
def test_pruned_channels_are_exactly_zero_wherever_they_flow(name):
    model, v, graph, shape = built(name)
    policy = M.MaskPolicy(exclude_first=False)
    channel_masks = M.init_channel_masks(graph, policy)
    assert channel_masks, f"{name} has no prunable channel groups"
    rng = np.random.default_rng(3)  # NumPy: an eager jax op per group would compile per shape
    channel_masks = {n: np.concatenate([[True], rng.random(m.size - 1) < 0.5])
                     for n, m in channel_masks.items()}
    masks = M.channel_masks_to_masks(v["params"], graph, channel_masks)
    M.check_masks(v["params"], masks)
    params = M.apply_masks(v["params"], masks)
    x = jax.random.normal(jax.random.key(4), (2, *shape))
    _, state = jax.jit(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                                mutable=["intermediates"]))(
        {**v, "params": params}, x)
    flat = np.concatenate([np.asarray(channel_masks.get(g.name, np.ones(g.size, bool)))
                           for g in graph.groups] + [np.ones(1, bool)])
    checked = 0
    for path, out in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
        module = tuple(str(k.key) for k in path[:-2])  # ('stage1_block1', 'bn1')
        for leaf in ("kernel", "scale"):
            axes = dict(graph.axis_channels.get(("params", *module, leaf), ()))
            index = axes.get(3 if leaf == "kernel" and out.ndim == 4 else
                             1 if leaf == "kernel" else 0)  # the output-channel axis
            if index is None:
                continue
            dead = ~flat[index]
            if dead.any():
                assert np.abs(np.asarray(out)[..., dead]).max() == 0.0, (name, module)
                checked += 1
    assert checked > 0


def test_l1_channel_pruning_keeps_the_strongest_channels():
    _, v, graph, _ = built("vgg11")
    cm = M.init_channel_masks(graph)
    out = M.l1_channel_masks(v["params"], graph, cm, 0.5)
    for name, keep in out.items():
        score = M.channel_scores(v["params"], graph, name)
        assert int(keep.sum()) == keep.size - round(0.5 * keep.size)
        assert score[keep].min() >= score[~keep].max()


def test_channel_masks_combine_with_an_unstructured_base():
    _, v, graph, _ = built("lenet5")
    base = M.magnitude_masks(v["params"], M.init_masks(v["params"], graph), graph, 0.5)
    cm = {"conv2": jnp.arange(50) % 2 == 0}
    masks = M.channel_masks_to_masks(v["params"], graph, cm, base=base)
    fc1 = masks["fc1"]["kernel"]
    assert not fc1[1].any()  # row 1 comes from conv2 channel 1, pruned
    np.testing.assert_array_equal(fc1[0], base["fc1"]["kernel"][0])


# -- bad input -------------------------------------------------------------------------

def test_mask_tree_that_does_not_match_names_the_leaf():
    _, v, graph, _ = built("lenet5")
    masks = M.init_masks(v["params"], graph)
    wrong = M.set_path(masks, ("conv2", "kernel"), jnp.ones((5, 5, 20, 49), bool))
    with pytest.raises(M.MaskError, match="conv2/kernel.*shape"):
        M.check_masks(v["params"], wrong)
    floats = M.set_path(masks, ("conv2", "kernel"), jnp.ones((5, 5, 20, 50)))
    with pytest.raises(M.MaskError, match="dtype"):
        M.check_masks(v["params"], floats)
    extra = {**masks, "conv9": {"kernel": jnp.ones((2,), bool)}}
    with pytest.raises(M.MaskError, match="conv9/kernel has no matching parameter"):
        M.check_masks(v["params"], extra)


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_ratio_outside_unit_interval(ratio):
    _, v, graph, _ = built("lenet5")
    masks = M.init_masks(v["params"], graph)
    with pytest.raises(M.MaskError, match=r"must lie in \[0, 1\]"):
        M.magnitude_masks(v["params"], masks, graph, ratio)
    with pytest.raises(M.MaskError, match=r"sparsity must lie"):
        M.global_magnitude_masks(v["params"], masks, graph, ratio)
    with pytest.raises(M.MaskError, match="fc1"):
        M.magnitude_masks(v["params"], masks, graph, {"fc1": ratio})


def test_ratio_for_unknown_layer_and_bad_channel_mask():
    _, v, graph, _ = built("lenet5")
    masks = M.init_masks(v["params"], graph)
    with pytest.raises(M.MaskError, match="not masked.*conv1"):
        M.magnitude_masks(v["params"], masks, graph, {"conv1": 0.5})
    with pytest.raises(M.MaskError, match="no channel groups named"):
        M.channel_masks_to_masks(v["params"], graph, {"conv7": jnp.ones(3, bool)})
    with pytest.raises(M.MaskError, match=r"shape \(3,\), need \(50,\)"):
        M.channel_masks_to_masks(v["params"], graph, {"conv2": jnp.ones(3, bool)})


def test_user_model_with_unsupported_op_keeps_those_channels_dense():
    class Odd(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.Conv(8, (3, 3), name="a")(x)
            x = jnp.flip(x, axis=-1)  # reverses channels: a mask cannot follow... yet it can't hurt
            x = nn.Conv(4, (3, 3), name="b")(x)
            x = jnp.swapaxes(x, 1, 3)  # moves channels off the last axis
            return nn.Dense(2, name="c")(x.reshape((x.shape[0], -1)))

    from purl_jax.graph import analyze
    model = Odd()
    v = model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    graph = analyze(model, v, (6, 6, 1))
    assert [l.name for l in graph.layers] == ["a", "b", "c"]
    assert "b" not in {p for g in graph.groups for p in g.producers}  # tainted by the transpose


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenet_v2"])
def test_channel_masks_round_trip_through_a_mask_tree(name):
    _, v, graph, _ = built(name)
    cm = M.init_channel_masks(graph, M.MaskPolicy(exclude_first=False))
    rng = np.random.default_rng(5)  # NumPy draws: eager jax.random compiles per shape
    cm = {n: np.concatenate([[True], rng.random(m.size - 1) < 0.5]) for n, m in cm.items()}
    masks = M.channel_masks_to_masks(v["params"], graph, cm)
    back = M.channel_masks_from_masks(v["params"], graph, masks)
    expected = {n: m for n, m in cm.items() if not bool(m.all())}
    assert set(back) == set(expected)
    for n in expected:
        np.testing.assert_array_equal(back[n], expected[n])
    # Unstructured masks leave biases and batch norm alone: no channel is removed.
    unstructured = M.magnitude_masks(v["params"], M.init_masks(v["params"], graph), graph, 0.99)
    assert M.channel_masks_from_masks(v["params"], graph, unstructured) == {}


def test_gradual_ratios_ramp_up_to_the_final_ratios():
    steps = M.gradual_ratios({"a": 0.9, "b": 0.5}, 3)
    assert len(steps) == 3 and steps[-1] == {"a": 0.9, "b": 0.5}
    a = [s["a"] for s in steps]
    assert 0 < a[0] < a[1] < a[2] and a[0] > 0.9 / 3  # cubic: front-loaded
    assert M.gradual_ratios({"a": 0.9}, 1) == [{"a": 0.9}]
    with pytest.raises(M.MaskError, match="rounds"):
        M.gradual_ratios({"a": 0.9}, 0)
