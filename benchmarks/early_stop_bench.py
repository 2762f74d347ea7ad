"""Early stopping against a fixed epoch count, seeds 1-5 side by side: epochs trained, each
run's wall time, and the test metric of the weights it kept (issue 24).

Run from the repo root: `.venv/bin/python benchmarks/early_stop_bench.py [--mnist-root DIR]
[--seeds 5]`. Two experiments, each as two seed sweeps in one store:
- `experiment=mnist_mlp` (the real MNIST files under --mnist-root, default
  ../shared/datasets): its own 10 epochs ending with the last epoch's weights, against at
  most 30 epochs with `trainer.early_stop.patience=3 trainer.keep=best` (watching val_acc);
- `experiment=auto_mpg` with a validation split (`data.val_size=0.15`): its own 200 epochs
  (the last epoch's weights), against at most 400 with `patience=20`, `keep=best`
  (watching val_rmse).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cases(mnist_root: Path) -> list[tuple[str, str, list[str], str]]:
    """(experiment, mode, overrides, test metric) for each sweep."""
    mnist = ["experiment=mnist_mlp", f"data.root={mnist_root}", "data.download=false"]
    mpg = ["experiment=auto_mpg", "data.val_size=0.15"]
    stop = ["trainer.keep=best"]
    return [
        ("mnist_mlp", "fixed 10 epochs", [*mnist, "trainer.keep=last"], "test_acc"),
        ("mnist_mlp", "early stop (max 30, patience 3)",
         [*mnist, "trainer.epochs=30", "trainer.early_stop.patience=3", *stop], "test_acc"),
        ("auto_mpg", "fixed 200 epochs", [*mpg, "trainer.keep=last"], "test_rmse"),
        ("auto_mpg", "early stop (max 400, patience 20)",
         [*mpg, "trainer.epochs=400", "trainer.early_stop.patience=20", *stop], "test_rmse"),
    ]  # fmt: skip


def sweep(folder: Path, overrides: list[str], seeds: int, experiment: str) -> None:
    """One seed sweep, its jobs one after another (the basic launcher), into folder's store."""
    subprocess.run(
        [sys.executable, "-m", "runner", "-m", f"seed=range(1,{seeds + 1})", *overrides,
         f"tracking.experiment={experiment}", "trainer.plots=false", "trainer.log_model=false",
         "trainer.progress=none"],
        cwd=folder, check=True, capture_output=True, text=True,
    )  # fmt: skip


def summary(folder: Path, experiment: str, metric: str) -> list[tuple[int, int, float, float]]:
    """Per job, in seed order: (seed, epochs trained, wall seconds, test metric)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'outputs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    rows = []
    for run in client.search_runs([exp.experiment_id]):
        if run.data.tags.get("runner.is_sweep") == "true":
            continue
        epochs = len(client.get_metric_history(run.info.run_id, "train_loss"))
        seconds = (run.info.end_time - run.info.start_time) / 1000
        rows.append((int(run.data.params["seed"]), epochs, seconds, run.data.metrics[metric]))
    return sorted(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist-root", type=Path, default=REPO_ROOT.parent / "shared/datasets")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="early-stop-bench-") as tmp:
        folder = Path(tmp)
        print("| experiment | mode | epochs per seed | wall s per run (mean) | test metric "
              "per seed | mean |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for i, (name, mode, overrides, metric) in enumerate(cases(args.mnist_root.resolve())):
            experiment = f"{name}_{i}"
            sweep(folder, overrides, args.seeds, experiment)
            rows = summary(folder, experiment, metric)
            epochs = " ".join(str(r[1]) for r in rows)
            wall = statistics.mean(r[2] for r in rows)
            values = [r[3] for r in rows]
            shown = " ".join(f"{v:.4f}" for v in values)
            print(f"| {name} | {mode} | {epochs} | {wall:.1f} | {metric} {shown} | "
                  f"{statistics.mean(values):.4f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
