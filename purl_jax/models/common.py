"""What every model in the zoo shares: per-layer width overrides for compact export."""

from __future__ import annotations

from typing import Mapping

Widths = Mapping[str, int] | None  # layer name ("stage1_block1/conv1") -> output features


def width(widths: Widths, name: str, default: int) -> int:
    """The output width of layer ``name``: the override if given, else the architecture's."""
    return int(widths[name]) if widths and name in widths else default


def sub_widths(widths: Widths, prefix: str) -> dict[str, int] | None:
    """The overrides of a submodule, with its prefix removed."""
    if not widths:
        return None
    start = prefix + "/"
    return {k[len(start):]: v for k, v in widths.items() if k.startswith(start)}
