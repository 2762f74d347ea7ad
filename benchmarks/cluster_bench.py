"""The team path's costs (issue 13), measured side by side in one run on this machine:

- the logging share of one XOR run (xor_deep, 200 epochs): the embedded SQLite store against
  the PostgreSQL-backed tracking server (cluster/tracking_server.py), interleaved `--repeat`
  times; each run's own line "training took X s, and MLflow logging Y s more" gives the share;
- a job's overhead on Slurm (cluster/slurm.py's one-node cluster): from the launcher's
  submission to the job's first epoch, for a 4-job sweep logging to the server.

Needs root (it starts PostgreSQL and Slurm). Run from the repo root:

    .venv/bin/python benchmarks/cluster_bench.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
QUIET = ["trainer.plots=false", "trainer.log_model=false", "trainer.progress=none"]
TOOK = re.compile(r"training took ([\d.]+) s, and MLflow logging ([\d.]+) s more")
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def runner(args: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    """Wall seconds and output of `python -m runner ARGS` in `cwd`."""
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | (env or {})
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=full, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.perf_counter() - started, proc.stdout + proc.stderr


def when(line: str) -> float:
    """A Hydra log line's time stamp, in epoch seconds."""
    stamp = STAMP.match(line)
    assert stamp, line
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> None:
    """Start the services, measure, stop them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cluster-bench-"))
    server = subprocess.run(
        [sys.executable, str(PROJECT / "cluster" / "tracking_server.py"), "start", "--dir",
         str(tmp / "server")], capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    conf = subprocess.run(
        [sys.executable, str(PROJECT / "cluster" / "slurm.py"), "start", "--dir",
         str(tmp / "slurm")], capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    try:
        print(f"command: {' '.join([sys.executable, *sys.argv])}")
        print(f"{os.cpu_count()} cores, load before: {os.getloadavg()[0]:.2f}")
        shares: dict[str, list[tuple[float, float, float]]] = {"embedded": [], "server": []}
        for i in range(args.repeat):
            for name, extra in (("embedded", []), ("server", [f"tracking.uri={server}"])):
                folder = tmp / f"{name}{i}"
                folder.mkdir()
                wall, out = runner(["model=xor_deep", *QUIET, *extra], folder)
                train, logging = (float(v) for v in TOOK.search(out).groups())
                shares[name].append((wall, train, logging))
        print("one XOR run (xor_deep, 200 epochs), medians:")
        for name, rows in shares.items():
            wall, train, logging = (statistics.median(r[k] for r in rows) for k in range(3))
            share = 100 * logging / (train + logging)
            print(f"  {name:<9} wall {wall:5.2f} s, training {train:5.2f} s, "
                  f"logging {logging:5.3f} s more ({share:.1f}%)")  # fmt: skip

        folder = tmp / "slurm-sweep"
        folder.mkdir()
        sweep = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1",
                 "seed=1,2,3,4", "model=xor_linear", "trainer.epochs=5", *QUIET,
                 f"tracking.uri={server}"]  # fmt: skip
        wall, out = runner(sweep, folder, {"SLURM_CONF": conf})
        submitted = when(next(line for line in out.splitlines() if "#0 :" in line))
        firsts = []
        for log in folder.glob("outputs/multirun/*/*/*/runner.log"):
            start = next(line for line in log.read_text().splitlines() if "training starts" in line)
            firsts.append(when(start) - submitted)
        delays = ", ".join(f"{s:.1f}" for s in sorted(firsts))
        print(f"4-job Slurm sweep (xor_linear, 5 epochs, 2 jobs at a time): {wall:.1f} s; "
              f"submission to a job's first epoch: {delays} s")  # fmt: skip
        print(f"load after: {os.getloadavg()[0]:.2f}")
    finally:
        subprocess.run([sys.executable, str(PROJECT / "cluster" / "slurm.py"), "stop", "--dir",
                        str(tmp / "slurm")])  # fmt: skip
        subprocess.run([sys.executable, str(PROJECT / "cluster" / "tracking_server.py"), "stop",
                        "--dir", str(tmp / "server"), "--purge"])  # fmt: skip


if __name__ == "__main__":
    main()
