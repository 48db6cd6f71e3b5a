import json
import struct

import pytest
from PIL import Image

from purl_jax import report as R


def _fake_workdir(tmp_path, name="run", algorithm="purl", budget=None):
    w = tmp_path / name
    (w / "search").mkdir(parents=True)
    result = dict(model="lenet5", dataset="mnist", algorithm=algorithm, target_sparsity=0.9,
                  dense_test_accuracy=0.991, pruned_test_accuracy=0.989, sparsity=0.9,
                  layer_sparsity={"conv1": 0.5, "conv2": 0.85, "fc1": 0.93, "fc2": 0.7},
                  params=431080, kept_params=45000, param_reduction=9.58, macs=2293000,
                  kept_macs=500000, flops_kept=0.218, flop_reduction=4.59,
                  search_seconds=12.0, seconds=40.0)
    if budget is not None:
        result.update(budget=budget, cost=budget - 0.01, cost_name="params")
    (w / "result.json").write_text(json.dumps(result))
    (w / "config.json").write_text(json.dumps({"seed": 3, "model": "lenet5"}))
    log = [dict(episode=i, final_reward=-1 + 0.1 * i, accuracy=0.5 + 0.04 * i,
                sparsity=0.8 + 0.01 * i, epsilon=1 - 0.1 * i) for i in range(8)]
    (w / "search" / "episodes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    (w / "curves.json").write_text(json.dumps({"baselines": {
        "global": {"sparsity": [0.5, 0.9], "accuracy": [0.99, 0.9]}}}))
    return w


def _event_scalars(directory):
    """Reads scalar tags from TensorBoard event files (TFRecord framing, no TensorFlow)."""
    from tensorboardX.proto import event_pb2

    tags = {}
    for path in directory.rglob("events.out.tfevents.*"):
        data = path.read_bytes()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            for v in event.summary.value:
                tags.setdefault(v.tag, []).append((event.step, v.simple_value))
            i += 12 + n + 4
    return tags


def test_report_writes_summary_plots_and_tensorboard(tmp_path):
    w = _fake_workdir(tmp_path)
    summary = R.write_report(w)
    saved = json.loads((w / "summary.json").read_text())
    assert saved["pruned_test_accuracy"] == 0.989 and saved["seed"] == 3
    assert saved["versions"]["jax"] != "not installed"
    for name in ("layer_sparsity.png", "accuracy_vs_sparsity.png", "search_curves.png"):
        with Image.open(w / name) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    assert len(summary["files"]) == 3
    tags = _event_scalars(w / "tensorboard")
    assert [s for s, _ in tags["search/epsilon"]] == list(range(8))
    assert tags["search/accuracy"][-1][1] == pytest.approx(0.78)
    text = R.format_summary(summary)
    assert "0.9910 -> pruned 0.9890" in text and "9.6x fewer" in text


def test_constrained_summary_shows_budget_and_cost(tmp_path):
    w = _fake_workdir(tmp_path, algorithm="constrained", budget=0.1)
    text = R.format_summary(R.write_report(w))
    assert "params / budget" in text and "0.0900 / 0.1000" in text


def test_a_budget_sweep_reports_its_front_with_the_baselines(tmp_path):
    w = _fake_workdir(tmp_path, algorithm="constrained", budget=0.1)
    front = [dict(method="constrained", budget=0.2, cost=0.199, cost_name="params", test_accuracy=0.992),
             dict(method="global", budget=0.2, cost=0.2, cost_name="params", test_accuracy=0.9917),
             dict(budget=0.1, cost=0.0999, cost_name="params", test_accuracy=0.9914)]  # no method: older runs
    (w / "front.json").write_text(json.dumps(front))
    summary = R.write_report(w)
    assert [r["method"] for r in summary["front"]] == ["constrained", "global", "constrained"]
    text = R.format_summary(summary)
    assert "global       budget 0.2000  cost 0.2000  test accuracy 0.9917" in text
    with Image.open(w / "front.png") as im:
        assert im.size[0] > 300
    assert str(w / "front.png") in summary["files"]


def test_compare_puts_several_runs_in_one_plot(tmp_path):
    a = _fake_workdir(tmp_path, "a")
    b = _fake_workdir(tmp_path, "b", algorithm="global")
    out = R.compare([a, b], tmp_path / "compare.png")
    with Image.open(out) as im:
        assert im.size[0] > 300


def test_missing_result_says_what_to_run(tmp_path):
    with pytest.raises(R.ReportError, match="run `purl-jax prune"):
        R.write_report(tmp_path)


def test_report_command_prints_and_compares(tmp_path, capsys):
    from purl_jax.main import run

    a = _fake_workdir(tmp_path, "a")
    b = _fake_workdir(tmp_path, "b", algorithm="global")
    run(["purl-jax", "report", "--workdir", str(a), "--workdir", str(b)])
    out = capsys.readouterr().out
    assert out.count("test accuracy") == 2 and "comparison plot" in out
    assert (a / "compare.png").exists()
    with pytest.raises(SystemExit) as e:
        run(["purl-jax", "report", "--workdir", str(tmp_path / "nothing")])
    assert e.value.code == 2
