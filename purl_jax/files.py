"""Work-directory files: local or ``gs://`` paths, and one writer in a multi-process run.

Paths are ``etils.epath.Path``, so ``--workdir gs://bucket/run`` works like a local folder
(``gs://`` needs ``gcsfs``: ``pip install 'purl-jax[gcs]'``). On a TPU VM slice every
process runs the same code on the same work directory; the JSON, logs, plots and
TensorBoard events are written by process 0 alone (``is_writer``), so they are written
once. Orbax saves are the exception: every process takes part in them.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from etils import epath


def path(p: str | os.PathLike) -> epath.Path:
    """``p`` as an ``epath.Path``; local paths made absolute (orbax needs that), URLs kept."""
    p = epath.Path(p)
    return p if "://" in os.fspath(p) else p.resolve()


def is_writer() -> bool:
    """True in the one process that writes work-directory files (process 0)."""
    return jax.process_index() == 0


def write_text(p: epath.Path, text: str) -> None:
    """Writes ``text`` to ``p`` in the writer process."""
    if is_writer():
        p.write_text(text)


def write_bytes_atomic(p: epath.Path, data: bytes) -> None:
    """Writes ``data`` to ``p`` in the writer process through a temporary file, so a crash
    leaves the old file or the new one, never half of one."""
    if is_writer():
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(p)


def append_line(p: epath.Path, line: str) -> None:
    """Appends ``line`` to ``p`` in the writer process. Object stores (``gs://``) cannot
    append, so there the file is rewritten (logs hold one line per epoch or episode)."""
    if not is_writer():
        return
    if "://" in os.fspath(p):
        p.write_text((p.read_text() if p.exists() else "") + line + "\n")
    else:
        with p.open("a") as f:
            f.write(line + "\n")


def save_figure(fig: Any, p: epath.Path, **savefig_kwargs: Any) -> None:
    """Saves a matplotlib figure as PNG in the writer process (through ``epath``, so to
    ``gs://`` too) and closes it in every process."""
    import matplotlib.pyplot as plt

    if is_writer():
        with p.open("wb") as f:
            fig.savefig(f, format="png", **savefig_kwargs)
    plt.close(fig)
