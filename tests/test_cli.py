"""The ``purl-jax`` command line: help, usage errors and the commands the docs name."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from purl_jax import data as D
from purl_jax import main as main_lib
from purl_jax import report
from purl_jax import train as train_lib
from purl_jax.main import run

REPO = Path(__file__).resolve().parents[1]
DENSE = str(REPO / "configs" / "lenet5_mnist.py")
PURL = str(REPO / "configs" / "lenet5_mnist_purl.py")


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if a command gets as far as training, pruning or the model zoo."""
    import purl_jax.search

    def refuse(*args, **kwargs):
        raise AssertionError("the command did work it should have refused")

    monkeypatch.setattr(purl_jax.search, "prune", refuse)
    monkeypatch.setattr(train_lib, "train_and_evaluate", refuse)
    monkeypatch.setattr(main_lib, "describe_models", refuse)


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as e:
        run(["purl-jax", *argv])
    return e.value.code


@pytest.mark.parametrize("argv, expected", [
    (["--help"], "purl-jax prune --config configs/X.py --workdir D"),
    (["-h"], "Multi-host"),
    (["--distributed", "--help"], "purl-jax report --workdir D"),
    (["prune", "--help"], "usage: purl-jax prune --config"),
    (["prune", "--config", PURL, "-h"], "usage: purl-jax prune --config"),
    (["train", "--help"], "usage: purl-jax train --config"),
    (["train", "-h", "--distributed"], "--config.a.b=VALUE"),
    (["models", "--help"], "usage: purl-jax models"),
])
def test_help_prints_usage_and_exits_0(argv, expected, capsys, no_work):
    assert _exit_code(argv) == 0
    out = capsys.readouterr().out
    assert expected in out
    if argv[0] in ("prune", "train"):
        assert "--workdir DIR" in out and "--config.train.epochs=2" in out and "Unknown" not in out


def test_models_rejects_other_arguments(capsys, no_work):
    assert _exit_code(["models", "resnet18"]) == 2
    assert "unexpected arguments resnet18" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "prune"])
@pytest.mark.parametrize("form", ["separate", "equals", "with_overrides"])
def test_missing_config_file_is_a_one_line_usage_error(command, form, tmp_path, capsys, no_work):
    missing = str(tmp_path / "configs" / "lenet5_mnsit.py")
    config = {"separate": ["--config", missing], "equals": [f"--config={missing}"],
              "with_overrides": ["--config", missing, "--config.train.epochs=1"]}[form]
    assert _exit_code([command, *config, "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"error: config file {missing!r} not found"
    assert "Traceback" not in err and "OSError" not in err
    assert not (tmp_path / "run").exists()


def test_config_folder_is_a_usage_error(tmp_path, capsys, no_work):
    assert _exit_code(["train", "--config", str(tmp_path), "--workdir", str(tmp_path / "run")]) == 2
    assert f"config file {str(tmp_path)!r} not found (it is a folder)" in capsys.readouterr().err


def test_unknown_config_field_prints_a_readable_message(tmp_path, capsys, no_work):
    argv = ["prune", "--config", PURL, "--workdir", str(tmp_path), "--config.prune.episode=3"]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == ("error: unknown config field 'episode'. "
                                   'Did you mean "episodes" instead of "episode"?')
    assert "\\" not in err
    # an unknown top-level section raises a KeyError, not an AttributeError
    assert _exit_code(["prune", "--config", PURL, "--workdir", str(tmp_path), "--config.nosuch.x=1"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == "error: unknown config field 'nosuch'"


def test_load_config_prints_a_readable_unknown_field():
    with pytest.raises(ValueError) as e:
        train_lib.load_config(PURL, ["--config.prune.episode=3"])
    assert str(e.value) == ("bad config override in ['--config.prune.episode=3']: unknown field "
                            "'episode'. Did you mean \"episodes\" instead of \"episode\"?")
    with pytest.raises(ValueError, match="unknown field 'nosuch'$"):
        train_lib.load_config(PURL, ["--config.nosuch.x=1"])


def test_prune_with_a_dense_config_says_it_has_no_prune_section(tmp_path, capsys, no_work):
    assert _exit_code(["prune", "--config", DENSE, "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.splitlines()[0]
    assert err.startswith(f"error: {DENSE} has no `prune` section")
    assert "*_purl.py" in err and "*_constrained.py" in err
    assert not (tmp_path / "run").exists()


def _documented_commands() -> list[tuple[str, str]]:
    """(file, command line) of every data command the configs and READMEs tell users to run."""
    found = []
    for path in [*sorted((REPO / "configs").glob("*.py")), REPO / "README.md",
                 REPO / "purl_jax" / "_data" / "README.md"]:
        text = path.read_text()
        assert "python -m purl_jax.data" not in text, f"{path} names a module with no command line"
        found += [(path.name, m) for m in re.findall(r"purl-jax data [^`\n(&]*", text)]
    return found


def test_docs_name_the_data_command_line_that_exists(monkeypatch):
    commands = _documented_commands()
    assert {f for f, _ in commands} >= {"resnet18_cifar10_constrained.py",
                                        "vgg16_cifar10_constrained.py", "README.md"}
    called = []
    monkeypatch.setattr(D, "prepare", lambda name, **kw: called.append(name) or "DIR")
    monkeypatch.setattr(D, "load_idx_dataset", lambda *a, **kw: called.append(a) or dict(
        train_labels=[0], test_labels=[0]))
    monkeypatch.setattr(Path, "is_dir", lambda self: True)  # DIR placeholders
    for where, command in commands:
        args = shlex.split(command)[2:]
        if args[0] == "verify" and len(args) == 2:
            args += ["--name", "mnist"]
        assert D.main(args) == 0, f"{where}: {command}"
    assert len(called) == len(commands)


def test_data_verify_of_a_missing_folder_says_so(tmp_path, capsys):
    missing = tmp_path / "mnsit"
    assert D.main(["verify", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"{missing} is not a folder (it does not exist)" in err
    assert "No known SHA-256" not in err and "verify_checksum" not in err
    assert _exit_code(["data", "verify", str(missing), "--name", "mnist"]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(D.DataError, match="does not exist"):  # the library checks it first too
        D.load_idx_dataset(missing, name="mnsit")


def test_data_verify_of_an_unknown_name_suggests_the_name_flag(tmp_path, capsys):
    assert D.main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"No known SHA-256 checksums for '{tmp_path.name}'" in err and "--name" in err
    assert "verify_checksum=False" not in err


def test_report_of_an_unfinished_run_names_the_whole_prune_command(tmp_path):
    with pytest.raises(report.ReportError) as e:
        report.load_result(tmp_path)
    assert f"run `purl-jax prune --config CONFIG --workdir {tmp_path}` first" in str(e.value)
    assert "*_purl.py" in str(e.value)
