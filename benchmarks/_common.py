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
