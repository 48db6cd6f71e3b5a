"""What every benchmark's result file records besides its figures: the machine, the command."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

import jax


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")  # Linux names the model; platform.processor() often only "x86_64"
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU, accelerators and jax version, so a figure names where it was measured."""
    device = jax.devices()[0]
    return (f"{_cpu_name()}, {jax.device_count()} x {device.device_kind} ({device.platform}), "
            f"{os.cpu_count()} cores, jax {jax.__version__}")


def command() -> str:
    """The command line that reproduces the run, as typed from the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join(["python", str(script), *sys.argv[1:]])


def write_json(path: str | Path, data: dict | list) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _runs_file(path: Path) -> dict:
    if not path.exists():
        return dict(rows=[])
    data = json.loads(path.read_text())
    return dict(rows=data) if isinstance(data, list) else data  # a bare list: written before session 16


def read_runs(path: str | Path) -> list[dict]:
    """The rows recorded so far in a resumable result file (none when it does not exist)."""
    return _runs_file(Path(path))["rows"]


def write_runs(path: str | Path, rows: list[dict]) -> None:
    """A resumable result file: its rows, and the command and machine of every invocation
    that added to them (a resumed benchmark may span several)."""
    invocations = _runs_file(Path(path)).get("invocations", [])
    this = dict(command=command(), machine=machine())
    if this not in invocations:
        invocations.append(this)
    write_json(path, dict(invocations=invocations, rows=rows))
