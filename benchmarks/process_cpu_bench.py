"""CPU seconds of the training process, side by side for source trees (e.g. two commits
checked out with `git worktree add`): what every run, sweep worker and Slurm task pays
before and while it trains.

    python benchmarks/process_cpu_bench.py --tree new=. --tree old=/tmp/old-tree --repeat 5

Each repetition runs every tree once, interleaved (the machine is noisy): a single run
(`trainer.epochs=5`, MLflow companion on: its own CPU is not counted, it is not the
training process), a 10-seed stacked sweep (`trainer.epochs=20`), and a whole run with its
plots and model logged in-process (RUNNER_COMPANION=0: every CPU second of the run counts),
each in a fresh folder.
Prints the median CPU (user + system) and wall seconds of each.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["trainer.plots=false", "trainer.log_model=false", "trainer.progress=none"]
CASES = {
    "single run": ["trainer.epochs=5", *QUIET],
    "stacked sweep, 10 seeds": [
        "-m", "hydra/launcher=stacked", "seed=range(1,11)", "trainer.epochs=20", *QUIET,
    ],
    # MLflow in the training process: the run's whole CPU, model and plots included.
    "whole run, model + plots": ["trainer.epochs=5", "trainer.progress=none"],
}  # fmt: skip
IN_PROCESS = {"whole run, model + plots"}


def children_cpu() -> float:
    """CPU seconds of this process's finished (waited-for) children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one(tree: Path, args: list[str], folder: Path, companion: bool = True) -> tuple[float, float]:
    """Run `python -m runner ARGS` of `tree` in `folder`: its CPU and wall seconds."""
    env = {**os.environ, "RUNNER_COMPANION": "1" if companion else "0", "PYTHONPATH": str(tree)}
    env.pop("MLFLOW_TRACKING_URI", None)
    folder.mkdir(parents=True)
    cpu, started = children_cpu(), time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=folder, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    wall, cpu = time.monotonic() - started, children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"{tree}: {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return cpu, wall


def main() -> None:
    """Time every case on every tree, interleaved, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    trees = dict(item.split("=", 1) for item in options.tree)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(options.repeat):
            for number, (case, args) in enumerate(CASES.items()):
                for name, path in trees.items():
                    folder = Path(scratch) / f"{repeat}-{number}-{name}"
                    result = one(Path(path).resolve(), args, folder, case not in IN_PROCESS)
                    times.setdefault((case, name), []).append(result)
    print(f"medians of {options.repeat} (CPU s = user + system of the training process)")
    for (case, name), results in times.items():
        cpu = statistics.median(c for c, _ in results)
        wall = statistics.median(w for _, w in results)
        print(f"{case:<26} {name:<8} CPU {cpu:6.2f} s   wall {wall:6.2f} s")


if __name__ == "__main__":
    main()
