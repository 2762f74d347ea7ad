"""Predict benchmark: `python -m runner.predict` on a generated 1,000,000-row raw table (the
table benchmark's 30 columns, gaps included), against the training encoder's own rate on the
same file (`tabular.csv`: read, fit, encode).

Run from the repo root: `.venv/bin/python benchmarks/predict_bench.py [--rows N]
[--chunk-rows N]`. Goal (issue 24): rows per second at least the training encoder's, and a
peak memory that stays a chunk's worth, not the table's. A small run (20,000 rows, one
epoch) is trained first in a temporary folder so that there is a model to predict with.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from table_bench import SEED, generate, load, write_table  # noqa: E402 (beside this script)

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_ROWS = 20_000


def train(folder: Path) -> str:
    """A one-epoch run on a 20,000-row sample of the same table; returns its run id."""
    sample = folder / "train.csv"
    generate(TRAIN_ROWS, SEED + 1).to_csv(sample, index=False)
    conf = folder / "conf" / "data"
    conf.mkdir(parents=True)
    (conf / "bench_table.yaml").write_text(
        f"name: bench_table\ntype: csv\nnum_outputs: 1\npath: {sample}\ntarget: y\n"
        "task: regression\nval_size: 0.1\nstandardize_target: true\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "runner", "--config-dir", str(folder / "conf"),
         "data=bench_table", "model=mlp", "trainer.epochs=1", "trainer.batch_size=256",
         "trainer.plots=false", "trainer.progress=none"],
        cwd=folder, capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = done.stdout + done.stderr
    line = next(x for x in text.splitlines() if "ended FINISHED" in x)
    return line.split("MLflow run ")[1].split()[0]


def predict(folder: Path, run_id: str, table: Path, chunk_rows: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB, GNU time's) of `python -m runner.predict`."""
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "peak_kib=%M", sys.executable, "-m", "runner.predict", run_id,
         "--input", str(table), "--output", str(folder / "predicted.csv"),
         "--chunk-rows", str(chunk_rows)],
        cwd=folder, check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak = int(done.stderr.rsplit("peak_kib=", 1)[1].split()[0])
    return seconds, peak / 1024


def in_process(folder: Path, run_id: str, table: Path, chunk_rows: int) -> float:
    """Seconds of predict's own work (read, encode, predict, write) once its model is
    loaded: the part that grows with the rows."""
    import mlflow

    from runner import predict
    from runner.tracking.pyfunc_model import table_predictor

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'outputs' / 'mlflow.db'}")
    predictor = table_predictor(predict.load_model(f"runs:/{run_id}/model"))
    started = time.perf_counter()
    predict.predict_file(predictor, table, folder / "again.csv", {}, False, chunk_rows)
    return time.perf_counter() - started


def main() -> None:
    """Train, time the training encoder on the table, then time predict on it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        run_id = train(folder)
        table, _, _ = write_table(args.rows, folder)
        started = time.perf_counter()
        load(table)  # the training encoder: read, fit, encode
        encoder_s = time.perf_counter() - started
        predict_s, peak_mib = predict(folder, run_id, table, args.chunk_rows)
        lines = sum(1 for _ in open(folder / "predicted.csv")) - 1
        assert lines == args.rows, lines
        rows_s = in_process(folder, run_id, table, args.chunk_rows)
    print(f"rows: {args.rows:,}, 30 columns; chunk: {args.chunk_rows:,} rows")
    print(f"training encoder (tabular.csv, in process): {encoder_s:.1f} s, "
          f"{args.rows / encoder_s:,.0f} rows/s")  # fmt: skip
    print(f"python -m runner.predict (the whole command, imports and model load included): "
          f"{predict_s:.1f} s, {args.rows / predict_s:,.0f} rows/s, "
          f"peak RSS {peak_mib:.0f} MiB")  # fmt: skip
    print(f"predict's own work once the model is loaded (in process): {rows_s:.1f} s, "
          f"{args.rows / rows_s:,.0f} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
