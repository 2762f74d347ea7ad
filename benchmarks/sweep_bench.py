"""Sweep speed: the same 8-job XOR sweep, sequential (basic launcher) against joblib with
2 workers, timed end to end side by side. Target: joblib/sequential wall time <= 0.65.

    .venv/bin/python benchmarks/sweep_bench.py [--jobs 8] [--repeat 1]
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

from mlflow.tracking import MlflowClient

LAUNCHERS = {
    "sequential (basic)": [],
    "joblib, 2 workers": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


def run_sweep(launcher_args: list[str], jobs: int) -> tuple[float, int]:
    """Wall seconds of one sweep in a fresh folder, and how many job runs FINISHED."""
    with tempfile.TemporaryDirectory() as tmp:
        seeds = ",".join(str(s) for s in range(1, jobs + 1))
        cmd = [sys.executable, "-m", "runner", "-m", f"seed={seeds}", *launcher_args]
        cmd += ["trainer.progress=none", "trainer.log_model=false", "trainer.plots=false"]
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - start
        client = MlflowClient(f"sqlite:///{Path(tmp) / 'outputs' / 'mlflow.db'}")
        exp = client.get_experiment_by_name("xor")
        runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
        finished = sum(r.data.tags.get("runner.is_sweep") != "true" for r in runs)
        return wall, finished


def main() -> None:
    """Time both launchers, interleaved per repeat so machine noise hits both alike."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in LAUNCHERS}
    for _ in range(args.repeat):
        for name, launcher_args in LAUNCHERS.items():
            wall, finished = run_sweep(launcher_args, args.jobs)
            assert finished == args.jobs, f"{name}: {finished} of {args.jobs} runs FINISHED"
            walls[name].append(wall)
            print(f"  {name}: {wall:.1f} s, {finished} runs FINISHED", file=sys.stderr)
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(
        f"{args.jobs}-job XOR sweep (xor_deep, adam, 200 epochs, batch 2), {os.cpu_count()} cores"
    )
    seq, par = (statistics.median(walls[name]) for name in LAUNCHERS)
    for name in LAUNCHERS:
        print(f"  {name:<20} {statistics.median(walls[name]):7.1f} s")
    print(f"  joblib / sequential  {par / seq:7.2f}   (target <= 0.65)")


if __name__ == "__main__":
    main()
