"""Stacked sweeps end to end (issue 12), side by side in one run:

- the 100-seed XOR sweep (xor_deep, Adam, 200 epochs, batch 2) on `hydra/launcher=stacked`,
  against the same sweep on joblib with 2 workers (timed on its first `--joblib-seeds`
  seeds and scaled to 100: at about 5 s a job it would take ten minutes);
- `experiment=xor_capacity` with 10 seeds per size (60 jobs, report and capacity plot) on
  the stacked launcher.

Each sweep runs in a fresh folder; the script checks that every job's run FINISHED with
all its epochs of metrics, and prints where the stacked sweep's time went (from its log).

    .venv/bin/python benchmarks/stacked_sweep_bench.py [--seeds 100] [--joblib-seeds 10]
        [--mnist ../shared/datasets]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from mlflow.tracking import MlflowClient

QUIET = ["trainer.plots=false", "trainer.log_model=false", "trainer.progress=none"]
XOR = ["model=xor_deep", "optim=adam", *QUIET]
TRAINED = re.compile(r"trained \d+ jobs stacked in ([\d.]+) s")
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
PHASES = [  # (a log message that ends a phase, the phase)
    (re.compile(r"Launching"), "start, parent run, checking the jobs' configs"),
    (re.compile(r"trained \d+ jobs stacked"), "preparing the jobs (data, models), training"),
    (re.compile(r"logged \d+ runs"), "writing the member runs"),
    (re.compile(r"sweep run \w+ ended"), "report"),
]


def run_sweep(args: list[str], experiment: str, epochs: int) -> tuple[float, int, str]:
    """Wall seconds of one sweep in a fresh folder, how many job runs FINISHED with all
    `epochs` epochs of train_loss, and its output."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "runner", "-m", *args],
            cwd=tmp, env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"sweep failed: {' '.join(args)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        client = MlflowClient(f"sqlite:///{Path(tmp) / 'outputs' / 'mlflow.db'}")
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
        jobs = [r for r in runs if r.data.tags.get("runner.is_sweep") != "true"]
        complete = sum(
            len(client.get_metric_history(r.info.run_id, "train_loss")) == epochs for r in jobs
        )
        return wall, complete, proc.stdout + proc.stderr


def phases(output: str, started: float) -> list[tuple[str, float]]:
    """Seconds spent in each phase of a stacked sweep, from its log's timestamps."""
    ends = {}
    for line in output.splitlines():
        stamp = STAMP.match(line)
        for pattern, name in PHASES:
            if stamp and name not in ends and pattern.search(line):
                ends[name] = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    spans, previous = [], started
    for _, name in PHASES:
        if name in ends:
            spans.append((name, ends[name] - previous))
            previous = ends[name]
    return spans


def training_wall(output: str) -> float:
    """Seconds from the start of a stacked sweep's first chunk's training to the end of its
    last (chunks may train side by side, on worker processes), from its log."""
    spans = []
    for line in output.splitlines():
        stamp, trained = STAMP.match(line), TRAINED.search(line)
        if stamp and trained:
            end = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            spans.append((end - float(trained.group(1)), end))
    return max(end for _, end in spans) - min(start for start, _ in spans)


def main() -> None:
    """Run the three sweeps and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--joblib-seeds", type=int, default=10)
    parser.add_argument("--skip-capacity", action="store_true")
    parser.add_argument(
        "--mnist",
        metavar="ROOT",
        help="folder holding MNIST/raw/: also time "
        "mnist_mlp (4 seeds, 2 epochs, no scheduler) stacked and one by one",
    )
    args = parser.parse_args()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"{os.cpu_count()} cores, load before: {os.getloadavg()[0]:.2f}")

    seeds = f"seed=range(1,{args.seeds + 1})"
    started = time.time()
    stacked, complete, output = run_sweep(["hydra/launcher=stacked", seeds, *XOR], "xor", 200)
    print(
        f"{args.seeds}-seed XOR sweep, stacked: {stacked:.1f} s "
        f"({complete} runs FINISHED with 200 epochs)"
    )
    for name, seconds in phases(output, started):
        print(f"    {name:<52} {seconds:6.1f} s")
    for line in output.splitlines():
        if "trained" in line and "stacked in" in line or "writer processes" in line:
            print(f"    log: {line.split(']', 2)[-1].strip()}")

    few = f"seed=range(1,{args.joblib_seeds + 1})"
    joblib_args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", few, *XOR]
    wall, complete, _ = run_sweep(joblib_args, "xor", 200)
    scaled = wall * args.seeds / args.joblib_seeds
    print(
        f"{args.joblib_seeds}-seed XOR sweep, joblib 2 workers: {wall:.1f} s ({complete} runs "
        f"FINISHED) -> {scaled:.0f} s for {args.seeds}"
    )
    print(f"stacked is {scaled / stacked:.1f}x faster (targets: <= 30 s, >= 15x)")

    if not args.skip_capacity:
        capacity_args = ["experiment=xor_capacity", "hydra/launcher=stacked"]
        capacity_args += ["seed=range(1,11)"]
        wall, complete, _ = run_sweep(capacity_args, "xor", 200)
        print(
            f"xor_capacity, 10 seeds x 6 sizes, stacked: {wall:.1f} s "
            f"({complete} of 60 runs FINISHED; target <= 60 s)"
        )
    if args.mnist:
        mnist = ["model=mnist_mlp", "data=mnist", f"data.root={Path(args.mnist).resolve()}"]
        mnist += ["optim=adam", "optim.lr=0.001", "trainer.batch_size=64", "trainer.epochs=2"]
        mnist += ["seed=1,2,3,4", *QUIET]
        _, _, output = run_sweep(["hydra/launcher=stacked", *mnist], "mnist", 2)
        stacked_train = training_wall(output)
        _, _, output = run_sweep(mnist, "mnist", 2)
        solo_train = sum(float(t) for t in re.findall(r"training took ([\d.]+) s", output))
        print(
            f"mnist_mlp, 4 seeds x 2 epochs, training: stacked {stacked_train:.2f} s (wall), "
            f"one by one {solo_train:.2f} s (ratio {stacked_train / solo_train:.2f})"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
