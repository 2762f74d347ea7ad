"""The model summary printed at start: each layer, its output shape and parameter count."""

from __future__ import annotations

from collections.abc import Sequence

from runner.builders import LayerInfo


def trainable_parameters(infos: Sequence[LayerInfo]) -> int:
    """Total trainable parameters: the model's capacity."""
    return sum(info.params for info in infos)


def model_summary(infos: Sequence[LayerInfo], input_shape: tuple[int, ...], device: str) -> str:
    """A fixed-width table in the style of Lightning's ModelSummary."""
    rows = [("", "layer", "output shape", "params")]
    rows.append(("", "input", str(list(input_shape)), ""))
    rows += [(str(i.index), i.type, str(list(i.output_shape)), f"{i.params:,}") for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("-" * len(lines[0]))
    lines.append(f"trainable params: {trainable_parameters(infos):,}    device: {device}")
    return "\n".join(lines)
