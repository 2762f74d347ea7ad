"""`python -m runner.report` over a large stacked sweep's store (issue 25), side by side for
source trees (e.g. the commit before the statistics and curves, checked out with
`git worktree add`):

    .venv/bin/python benchmarks/report_bench.py --tree new=. --tree old=/tmp/old [--seeds 300]

The store is made once per `--seeds` in `--store-dir` (default /tmp/runner-report-bench):
an XOR stacked sweep of that many seeds (xor_deep, Adam, 200 epochs, no plots or models).
Each repetition runs every tree's `python -m runner.report xor` once, interleaved (the
machine is noisy), and the script prints each tree's median wall seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["trainer.plots=false", "trainer.log_model=false", "trainer.progress=none"]


def make_store(folder: Path, seeds: int) -> None:
    """A stacked XOR sweep of `seeds` seeds in `folder`, unless one is there already."""
    if (folder / "outputs" / "mlflow.db").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    start = time.perf_counter()
    args = ["-m", "hydra/launcher=stacked", f"seed=range(1,{seeds + 1})", *QUIET]
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=folder, env=env, capture_output=True,
        text=True,
    )  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"the sweep failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    print(f"made the {seeds}-seed store in {time.perf_counter() - start:.1f} s: {folder}")


def one_report(tree: Path, folder: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of `python -m runner.report xor` of `tree`."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        done = subprocess.run(
            [
                "/usr/bin/time", "-f", "%M", sys.executable, "-m", "runner.report", "xor",
                "--out", out,
            ],
            cwd=folder, env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{tree}: the report failed:\n{done.stderr[-3000:]}")
    peak_kib = float(done.stderr.strip().splitlines()[-1])
    return wall, peak_kib / 1024


def main() -> None:
    """Make the store, then time each tree's report, interleaved."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--seeds", type=int, default=300)
    parser.add_argument("--store-dir", default="/tmp/runner-report-bench")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    folder = Path(options.store_dir) / f"seeds-{options.seeds}"
    make_store(folder, options.seeds)
    trees = dict(item.split("=", 1) for item in options.tree)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for _ in range(options.repeat):
        for name, path in trees.items():
            times[name].append(one_report(Path(path).resolve(), folder))
    print(f"python -m runner.report xor, {options.seeds} seeds, medians of {options.repeat}")
    for name, results in times.items():
        wall = statistics.median(w for w, _ in results)
        peak = statistics.median(m for _, m in results)
        print(f"{name:<8} wall {wall:6.2f} s   peak RSS {peak:6.0f} MiB")


if __name__ == "__main__":
    main()
