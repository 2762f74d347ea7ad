"""What a run's times say against what happened: process wall time, the runner's own
"training took" line, the MLflow run's duration and its time_train_s, side by side for
source trees (e.g. two commits checked out with `git worktree add`).

    python benchmarks/run_times.py --tree new=. --tree old=/tmp/old-tree --repeat 3

Each repetition runs every tree once, interleaved (the machine is noisy), with the MLflow
companion on and `model=xor_linear optim=sgd optim.lr=0.001` (the book's linear XOR) unless
overrides follow `--`. Old trees logged time_train_s as a metric, new ones as a tag.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

DEFAULT_ARGS = ["model=xor_linear", "optim=sgd", "optim.lr=0.001", "trainer.progress=none"]


def one_run(tree: Path, overrides: list[str], out: Path) -> dict[str, float]:
    """Run the runner of `tree` once into `out`; its times as seen from each side."""
    env = {**os.environ, "RUNNER_COMPANION": "1", "PYTHONPATH": str(tree)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable, "-m", "runner", f"tracking.store_dir={out}/store",
        f"hydra.run.dir={out}/run", *overrides,
    ]  # fmt: skip
    started = time.time()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.time() - started
    if done.returncode != 0:
        raise SystemExit(f"{tree}: exit {done.returncode}\n{done.stderr[-2000:]}")
    log = (out / "run" / "runner.log").read_text()
    took = float(re.search(r"training took ([\d.]+) s", log).group(1))
    client = MlflowClient(f"sqlite:///{out}/store/mlflow.db")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    tagged = run.data.tags.get("runner.time_train_s") or run.data.metrics.get("time_train_s")
    return {
        "wall_s": wall,
        "log_training_s": took,
        "mlflow_duration_s": (run.info.end_time - run.info.start_time) / 1000,
        "time_train_s": float(tagged),
        "started_after_s": run.info.start_time / 1000 - started,
    }


def main() -> None:
    """Interleaved repetitions over the trees; one line per run, then the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=DEFAULT_ARGS)
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree)
    print(f"load average: {os.getloadavg()}")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    scratch = Path(tempfile.mkdtemp(prefix="run_times_"))
    try:
        for rep in range(args.repeat):
            for name, path in trees.items():
                row = one_run(Path(path).resolve(), args.overrides, scratch / f"{name}{rep}")
                results[name].append(row)
                print(name, rep, " ".join(f"{k}={v:.2f}" for k, v in row.items()), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, rows in results.items():
        medians = {k: sorted(r[k] for r in rows)[len(rows) // 2] for k in rows[0]}
        print(f"median {name}:", " ".join(f"{k}={v:.2f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
