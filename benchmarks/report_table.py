"""What the benchmark scripts print their reports with: medians, fixed-width tables, the
commit that ran. Imported by the scripts beside it (run as `python benchmarks/<script>.py`)."""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Sequence
from pathlib import Path

Result = dict[str, float]
REPO_ROOT = Path(__file__).resolve().parents[1]


def median(results: list[Result]) -> Result:
    """Per-field median over repeats."""
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        """One row, padded to the column widths."""
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


def git_version() -> str:
    """The repo's commit, marked -dirty when the working tree (which is what runs) differs."""
    cmd = ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"
