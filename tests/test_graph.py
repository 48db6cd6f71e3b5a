"""The channel analysis, checked against what each architecture must tie together."""

import numpy as np
import pytest

from conftest import built


def _producers(graph, layer_name):
    return [g for g in graph.groups if layer_name in g.producers]


def test_lenet5_flatten_maps_dense_rows_to_conv_channels():
    _, _, graph, _ = built("lenet5")
    conv2 = graph.group("conv2")
    (axis0, rows), (axis1, _) = graph.axis_channels[("params", "fc1", "kernel")]
    assert (axis0, axis1) == (0, 1)
    # The 4x4x50 map is flattened channels-last: row r comes from channel r % 50.
    np.testing.assert_array_equal(rows, conv2.offset + np.arange(800) % 50)


def test_resnet20_residual_stream_is_one_group_per_stage_extension():
    _, _, graph, _ = built("resnet20")
    stream = graph.group("conv_init")
    assert stream.size == 16
    assert set(stream.producers) == {"conv_init"} | {
        f"stage{s}_block{b}/conv2" for s in (1, 2, 3) for b in (1, 2, 3)}
    # Option-A shortcuts zero-pad: stage 2 adds 16 channels of its own, stage 3 another 32.
    assert graph.group("stage2_block1/conv2").size == 16
    assert graph.group("stage3_block1/conv2").size == 32
    # Inner block channels are free groups of their own.
    assert graph.group("stage2_block2/conv1").producers == ("stage2_block2/conv1",)
    # The classifier's outputs are never a group (they reach the model output).
    assert not _producers(graph, "fc")


def test_resnet50_projection_shortcuts_tie_stage_streams():
    _, _, graph, _ = built("resnet50")
    (group,) = _producers(graph, "stage2_block1/proj_conv")
    assert group.size == 512
    assert set(group.producers) == {"stage2_block1/proj_conv"} | {
        f"stage2_block{b}/conv3" for b in range(1, 5)}


def test_mobilenet_depthwise_ties_expansion_to_its_output():
    _, _, graph, _ = built("mobilenet_v2")
    (group,) = _producers(graph, "block2/depthwise_conv")
    assert set(group.producers) == {"block2/expand_conv", "block2/depthwise_conv"}
    (stream,) = _producers(graph, "block4/project_conv")  # 3 blocks of 32 channels, residuals
    assert set(stream.producers) == {f"block{i}/project_conv" for i in (4, 5, 6)}


@pytest.mark.parametrize("name", ["lenet5", "vgg11", "resnet20", "resnet18", "resnet50",
                                  "mobilenet_v2"])
def test_every_axis_map_points_inside_its_groups(name):
    _, variables, graph, _ = built(name)
    for path, axes in graph.axis_channels.items():
        leaf = variables
        for key in path:
            leaf = leaf[key]
        for axis, index in axes:
            assert index.shape == (leaf.shape[axis],)
            assert index.max() < graph.num_channels
    layer_names = [layer.name for layer in graph.layers]
    assert len(set(layer_names)) == len(layer_names)
    assert [layer.index for layer in graph.layers] == list(range(len(graph.layers)))


def test_layer_features_for_conv_and_dense():
    _, _, graph, _ = built("resnet20")
    conv = graph.layer("stage2_block1/conv1")
    assert conv.kind == "conv" and conv.strides == (2, 2) and conv.kernel_size == (3, 3)
    assert conv.in_features == 16 and conv.out_features == 32
    assert conv.output_shape == (16, 16, 32) and conv.positions == 256
    fc = graph.layer("fc")
    assert fc.kind == "dense" and fc.macs == 64 * 10
    _, _, graph, _ = built("mobilenet_v2")
    assert graph.layer("block2/depthwise_conv").kind == "depthwise"


def test_unknown_layer_and_group_names_list_the_known_ones():
    _, _, graph, _ = built("lenet5")
    with pytest.raises(KeyError, match="conv1"):
        graph.layer("conv3")
    with pytest.raises(KeyError, match="groups"):
        graph.group("nope")
