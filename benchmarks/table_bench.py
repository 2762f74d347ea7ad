"""Table benchmark: a generated 1,000,000-row CSV through
`runner.components.datasets.tabular.csv`, and one epoch of the runner's loop against a
hand-written in-memory loop over the same tensors.

Run from the repo root: `.venv/bin/python benchmarks/table_bench.py [--rows N] [--repeat N]
[--batch-sizes 256 1024] [--keep] [--profile]`. Targets (the project's issue): the CSV is read
and encoded in <= 10 s; the runner's epoch runs at >= 0.9x the hand-written loop (samples/s).
Everything runs in this one process, variants interleaved, so load drifts hit each alike.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import dataclasses
import gc
import io
import math
import os
import platform
import pstats
import resource
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from report_table import git_version, median, table  # noqa: E402 (beside this script)
from torch import nn

from runner.components.datasets.base import DataSplits

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 1
N_NUMERIC = 20  # feature columns in raw units; with the categoricals and y: 30 columns
CATEGORIES = (3, 4, 6, 8, 12, 20, 30, 40, 50)  # categories of each text column
NUMERIC_MISSING = (0, 3, 7, 11, 15, 18)  # numeric columns with ~5% missing values
CATEGORICAL_MISSING = (1, 4, 8)  # text columns with ~3% missing values
VAL_SIZE = 0.1
HIDDEN = 64
LR = 1e-3
VAL_CHUNK = 8192  # the runner's EVAL_CHUNK: both validation passes do the same work
READ_TARGET_S = 10.0
EPOCH_TARGET = 0.9
WARMUP_BATCHES = 20

Result = dict[str, float]


# --- the table -----------------------------------------------------------------------------


def generate(rows: int, seed: int) -> pd.DataFrame:
    """A seeded table: 20 numeric columns in varied units, 9 text columns, a numeric target."""
    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {}
    signal = np.zeros(rows)
    for j in range(N_NUMERIC):
        # Units from 1e-3 to 1e6 and four shapes, so standardizing has real work to do.
        scale = 10 ** rng.uniform(-3, 6)
        shape = j % 4
        if shape == 0:
            raw = rng.normal(5 * scale, scale, rows)
        elif shape == 1:
            raw = rng.lognormal(0.0, 0.75, rows) * scale
        elif shape == 2:
            raw = rng.uniform(-scale, 3 * scale, rows)
        else:
            raw = rng.poisson(max(1.0, scale % 50), rows).astype(float)  # counts
        decimals = max(0, 3 - math.floor(math.log10(scale)))
        raw = np.round(raw, decimals)
        if j < 8:  # the target is linear in the first 8 columns (standardized)
            signal += rng.uniform(-2, 2) * (raw - raw.mean()) / (raw.std() or 1.0)
        if j in NUMERIC_MISSING:
            raw[rng.random(rows) < 0.05] = np.nan
        elif decimals == 0:  # whole numbers without gaps: an integer column, as in real tables
            raw = raw.astype(np.int64)
        data[f"num{j:02d}"] = raw
    for j, k in enumerate(CATEGORIES):
        # Uneven category frequencies, as in real tables.
        codes = rng.choice(k, rows, p=rng.dirichlet(np.ones(k)))
        if j < 3:  # the first 3 text columns move the target too
            signal += rng.normal(0, 1, k)[codes]
        labels = np.array([f"cat{j}_{c:02d}" for c in range(k)], dtype=object)[codes]
        if j in CATEGORICAL_MISSING:
            labels[rng.random(rows) < 0.03] = None
        data[f"cat{j}"] = labels
    data["y"] = np.round(100 + 10 * signal + rng.normal(0, 5, rows), 3)
    return pd.DataFrame(data)


def write_table(rows: int, folder: Path) -> tuple[Path, float, str]:
    """Generate the table and write it as CSV under `folder`; the path, seconds and writer."""
    t0 = time.perf_counter()
    path = folder / f"table_{rows}.csv"
    frame = generate(rows, SEED)
    try:  # pyarrow's writer takes 3 s for a million rows, pandas' about 30 s
        import pyarrow as pa
        from pyarrow import csv as pa_csv
    except ImportError:
        frame.to_csv(path, index=False)
        writer = "pandas.DataFrame.to_csv"
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)  # NaN and None: empty fields
        pa_csv.write_csv(table, path, pa_csv.WriteOptions(quoting_style="none"))
        writer = "pyarrow.csv.write_csv"
    return path, time.perf_counter() - t0, writer


# --- read + encode -------------------------------------------------------------------------


def load(path: Path) -> DataSplits:
    """The runner's CSV loader with the benchmark's settings (a validation split)."""
    from runner.components.datasets import tabular

    return tabular.csv(str(path), "y", val_size=VAL_SIZE, standardize_target=True)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn() and its wall time in seconds."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_read(path: Path, repeat: int) -> tuple[Result, dict[str, Any]]:
    """Medians of `tabular.csv` and of a bare `pd.read_csv` (the parse alone), interleaved."""
    csv_s, parse_s = [], []
    shape: dict[str, Any] = {}
    for i in range(repeat):
        note(f"read {i + 1}/{repeat}: pd.read_csv ...")
        frame, seconds = timed(lambda: pd.read_csv(path))
        parse_s.append(seconds)
        del frame
        gc.collect()  # free the last result before timing the next
        note(f"  {seconds:.2f} s; tabular.csv ...")
        data, seconds = timed(lambda: load(path))
        csv_s.append(seconds)
        note(f"  {seconds:.2f} s")
        shape = {
            "train": len(data.x_train),
            "val": len(data.x_val),
            "features": data.x_train.shape[1],
        }
        del data
        gc.collect()
    result = {"csv_s": statistics.median(csv_s), "parse_s": statistics.median(parse_s)}
    result |= {"csv_min_s": min(csv_s), "csv_max_s": max(csv_s)}
    return result, shape


def profile_read(path: Path, top: int = 18) -> str:
    """Where one `tabular.csv` call spends its time: cProfile, by own and cumulative time."""
    profiler = cProfile.Profile()
    profiler.enable()
    data = load(path)
    profiler.disable()
    del data
    gc.collect()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    # Keep the tables, drop pstats' preamble lines.
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("Ordered", "List")))


# --- one epoch: the runner against a hand-written loop -------------------------------------


def config(path: Path, batch_size: int, threads: int | str = "auto") -> dict[str, Any]:
    """The runner job: a small MLP on the table, one epoch, memory data path, nothing logged."""
    return {
        "seed": SEED,
        "device": "cpu",
        "trainer": {
            "epochs": 1,
            "threads": threads,
            "batch_size": batch_size,
            "progress": "none",
            "plots": False,
            "log_model": False,
            "data_path": "memory",
        },
        "model": {
            "name": "mlp",
            "layers": [
                {"layer": "linear", "out_features": HIDDEN},
                {"layer": "relu"},
                {"layer": "linear", "out_features": 1},
            ],
            "loss": {"name": "mse"},
        },
        "data": {
            "name": "table",
            "type": "csv",
            "path": str(path),
            "target": "y",
            "task": "regression",
            "val_size": VAL_SIZE,
            "standardize_target": True,
        },
        "optim": {"name": "adam", "lr": LR},
    }


def mlp(features: int) -> nn.Sequential:
    """The runner's architecture, built by hand from the same seed (PyTorch's default init)."""
    torch.manual_seed(SEED)
    return nn.Sequential(nn.Linear(features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 1))


def handwritten_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DataSplits,
    batch_size: int,
    generator: torch.Generator,
) -> Result:
    """One lean epoch: randperm batches from in-memory tensors, losses kept as tensors, then
    a validation pass in the runner's chunks. What a careful user writes without a tool."""
    loss_fn = nn.MSELoss()
    x, y, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    n = len(x)
    model.train()
    order = torch.randperm(n, generator=generator)
    xs, ys = x[order], y[order]
    losses = []
    for start in range(0, n, batch_size):
        xb, yb = xs[start : start + batch_size], ys[start : start + batch_size]
        loss = loss_fn(model(xb).squeeze(-1), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    sizes = torch.tensor([min(batch_size, n - s) for s in range(0, n, batch_size)]) / n
    train_loss = float(torch.stack(losses) @ sizes)
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(x_val[i : i + VAL_CHUNK]) for i in range(0, len(x_val), VAL_CHUNK)])
        val_loss = loss_fn(out.squeeze(-1), y_val).item()
    return {"train_loss": train_loss, "val_loss": val_loss}


def bench_epochs(
    path: Path, batch_size: int, repeat: int, threads: int | str = "auto"
) -> dict[str, Any]:
    """The runner's `fit` (1 epoch) and the hand-written loop, `repeat` times, interleaved."""
    from runner.config.spec import validate
    from runner.job import setup
    from runner.loop import choose_data_path, fit

    cfg = config(path, batch_size, threads)
    note(f"batch {batch_size}: setup (reads and encodes the CSV again) ...")
    job, setup_s = timed(lambda: setup(cfg, validate(cfg)))
    parts = job.parts
    threads = torch.get_num_threads()  # what setup's device.set_threads chose (or --threads)
    n = len(job.data.x_train)
    # Every repeat of the runner starts from setup's state: initial weights, an empty Adam,
    # the seeded batch order. The hand-written loop rebuilds the same from the seed.
    model_state = copy.deepcopy(parts.model.state_dict())
    optim_state = copy.deepcopy(parts.optimizer.state_dict())
    generator_state = job.generator.get_state()
    same_init = all(
        torch.equal(a, b)
        for a, b in zip(
            mlp(job.data.x_train.shape[1]).state_dict().values(),
            model_state.values(),
            strict=True,
        )
    )

    def runner(data: DataSplits) -> Result:
        """One timed fit() of the runner's training parts, reset to setup's state first."""
        parts.model.load_state_dict(model_state)
        parts.optimizer.load_state_dict(optim_state)
        job.generator.set_state(generator_state)
        (row,), seconds = timed(lambda: fit(parts, data, job.generator))
        return {"epoch_s": seconds, "train_loss": row["train_loss"], "val_loss": row["val_loss"]}

    def handwritten(fused: bool) -> Callable[[DataSplits], Result]:
        """The hand-written variant with default or fused Adam."""

        def run(data: DataSplits) -> Result:
            """One timed hand-written epoch on a model and Adam built from the seed."""
            torch.set_num_threads(threads)  # the same thread pool as the runner's
            model = mlp(data.x_train.shape[1])
            optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)
            generator = torch.Generator().manual_seed(SEED)
            row, seconds = timed(
                lambda: handwritten_epoch(model, optimizer, data, batch_size, generator)
            )
            return {"epoch_s": seconds, **row}

        return run

    variants = {"runner": runner, "hand": handwritten(False), "hand_fused": handwritten(True)}
    # An untimed warm-up of each variant on a slice: the first calls pay one-time costs
    # (thread pool start, kernel dispatch caches, allocator growth) that no epoch repeats.
    rows = WARMUP_BATCHES * batch_size
    warm = dataclasses.replace(
        job.data,
        x_train=job.data.x_train[:rows],
        y_train=job.data.y_train[:rows],
        x_val=job.data.x_val[:VAL_CHUNK],
        y_val=job.data.y_val[:VAL_CHUNK],
    )
    note(f"batch {batch_size}: warm-up ({WARMUP_BATCHES} batches per variant) ...")
    for run in variants.values():
        run(warm)
    runs: dict[str, list[Result]] = {name: [] for name in variants}
    for i in range(repeat):
        # Rotate the order each repeat, so no variant always runs right after another.
        names = list(variants)
        names = names[i % len(names) :] + names[: i % len(names)]
        for name in names:
            note(f"batch {batch_size} {i + 1}/{repeat}: {name} ...")
            result = variants[name](job.data)
            result["samples_per_s"] = n / result["epoch_s"]
            runs[name].append(result)
            note(f"  {result['epoch_s']:.2f} s, {result['samples_per_s']:,.0f} samples/s")
    out: dict[str, Any] = {name: median(rs) for name, rs in runs.items()}
    out |= {
        # Noise from other processes only adds time: the fastest epochs are the least disturbed.
        "best": {name: n / min(r["epoch_s"] for r in rs) for name, rs in runs.items()},
        "ratios": [
            r["samples_per_s"] / h["samples_per_s"]
            for r, h in zip(runs["runner"], runs["hand"], strict=True)
        ],
        "setup_s": setup_s,
        "threads": threads,
        "threads_setting": cfg["trainer"]["threads"],
        "params": job.trainable_params,
        "optimizer": optimizer_kind(parts.optimizer),
        "auto_path": choose_data_path("auto", job.data, parts.device),
        "same_init": same_init,
        "steps": math.ceil(n / batch_size),
    }
    return out


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    """Adam's implementation as the runner built it: fused, foreach or the default."""
    defaults = optimizer.defaults
    kind = "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") else "default"
    return f"{type(optimizer).__name__}({kind})"


# --- report --------------------------------------------------------------------------------


def note(message: str) -> None:
    """Progress for the person waiting; stderr, so stdout holds only the report."""
    print(f"[table-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def header(args: argparse.Namespace, started: str, load_start: Sequence[float]) -> str:
    """The command line and the conditions the figures were measured under."""
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "pandas", "numpy"))

    def load_avg(values: Sequence[float]) -> str:
        """Load averages as '1.00, 2.00, 3.00'."""
        return ", ".join(f"{v:.2f}" for v in values)

    return "\n".join(
        [
            f"command: {shlex.join([sys.executable, *sys.argv])}",
            f"cwd:     {Path.cwd()}",
            f"date:    {started} to {time.strftime('%H:%M:%S')}",
            f"runner:  git {git_version()}",
            f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {versions}",
            # Other users' processes skew the figures; the load average shows how much.
            f"load average (1/5/15 min): start {load_avg(load_start)}; end "
            f"{load_avg(os.getloadavg())}",
            f"repeats: {args.repeat} (figures are per-variant medians); peak RSS "
            f"{peak_rss_mib():,.0f} MiB",
        ]
    )


def table_report(args: argparse.Namespace, path: Path, gen_s: float, writer: str) -> str:
    """What was generated."""
    size = path.stat().st_size / 2**20
    return "\n".join(
        [
            f"table: {args.rows:,} rows x {N_NUMERIC + len(CATEGORIES) + 1} columns "
            f"({N_NUMERIC} numeric in units 1e-3..1e6, {len(NUMERIC_MISSING)} of them ~5% "
            f"missing; {len(CATEGORIES)} text with {min(CATEGORIES)}-{max(CATEGORIES)} "
            f"categories, {len(CATEGORICAL_MISSING)} of them ~3% missing; target y linear in 8 "
            "numeric + 3 text columns plus noise)",
            f"file:  {path} ({size:,.0f} MiB), generated and written ({writer}) in "
            f"{gen_s:.1f} s (not part of any target)",
        ]
    )


def read_report(read: Result, shape: dict[str, Any], profile: str | None) -> str:
    """The read + encode table and, when profiled, where the time went."""
    met = read["csv_s"] <= READ_TARGET_S
    body = table(
        ["step", "median s", "min s", "max s"],
        [
            ["pd.read_csv(path) alone (the parse)", f"{read['parse_s']:.2f}", "", ""],
            [
                f"tabular.csv(path, 'y', val_size={VAL_SIZE}, standardize_target=True)",
                f"{read['csv_s']:.2f}",
                f"{read['csv_min_s']:.2f}",
                f"{read['csv_max_s']:.2f}",
            ],
        ],
    )
    lines = [
        "Read + encode",
        body,
        f"encoded: {shape['train']:,} train + {shape['val']:,} val rows x {shape['features']} "
        "float32 features",
        f"tabular.csv beyond the parse: {read['csv_s'] - read['parse_s']:.2f} s (column plan, "
        "missing-target check, split, fit, encode, tensors)",
        f"target: <= {READ_TARGET_S:.0f} s -> {'met' if met else 'NOT met'} "
        f"({read['csv_s']:.2f} s)",
        "timed in this process after pandas is imported (the loader's pandas import is not in "
        "the figure).",
    ]
    if profile:
        lines += [
            "",
            "cProfile of one tabular.csv call (top by own time, then cumulative):",
            profile,
        ]
    return "\n".join(lines)


def epoch_report(epochs: dict[int, dict[str, Any]]) -> str:
    """The epoch table per batch size, ratios and what each figure means."""
    rows = []
    for batch, e in epochs.items():
        for name, label in (
            ("runner", "runner fit(), 1 epoch"),
            ("hand", "hand-written, Adam (default)"),
            ("hand_fused", "hand-written, Adam(fused=True)"),
        ):
            r = e[name]
            rows.append(
                [
                    f"batch {batch}: {label}",
                    f"{r['samples_per_s']:,.0f}",
                    f"{e['best'][name]:,.0f}",
                    f"{r['epoch_s']:.2f}",
                    f"{r['train_loss']:.5f}",
                    f"{r['val_loss']:.5f}",
                ]
            )
    headers = ["variant", "samples/s", "best samples/s", "epoch s", "train loss", "val loss"]
    body = table(headers, rows)
    lines = ["One epoch: the runner's loop against a hand-written in-memory loop", body]
    for batch, e in epochs.items():
        ratio = e["runner"]["samples_per_s"] / e["hand"]["samples_per_s"]
        fused = e["runner"]["samples_per_s"] / e["hand_fused"]["samples_per_s"]
        best = e["best"]["runner"] / e["best"]["hand"]
        each = ", ".join(f"{r:.2f}" for r in e["ratios"])
        lines.append(
            f"batch {batch}: runner / hand-written = {ratio:.2f}x (medians; target >= "
            f"{EPOCH_TARGET}x -> {'met' if ratio >= EPOCH_TARGET else 'NOT met'}); best epochs "
            f"{best:.2f}x; per repeat {each}; runner / hand-written fused = {fused:.2f}x"
        )
    e = next(iter(epochs.values()))
    lines += [
        f"model: {e['params']:,} trainable parameters (MLP features-{HIDDEN}-1, ReLU), MSE, "
        f"lr {LR}; torch threads {e['threads']} (trainer.threads={e['threads_setting']}, set "
        "by the runner's setup; the hand-written loop uses the same); "
        f"runner optimizer {e['optimizer']}; data path memory (auto would pick "
        f"{e['auto_path']}); same initial weights: {e['same_init']}",
        "setup (not timed in the epoch; reads and encodes the CSV, builds the model): "
        + ", ".join(f"batch {b} {e['setup_s']:.1f} s" for b, e in epochs.items()),
        "epoch s: runner = the fit() call (shuffle gather, steps, train metrics over the "
        "epoch's outputs, one validation pass); hand-written = the same gather and steps, the "
        "epoch's mean loss and one validation pass in the same 8192-row chunks.",
        "Each repeat starts from the same initial weights, an empty Adam and the same seeded "
        "batch order, so the losses are comparable (fused and default Adam round differently).",
        "best samples/s: the fastest repeat (other processes only ever add time). The spread "
        "between repeats is in the progress lines on stderr.",
    ]
    return "\n".join(lines)


def summary(
    args: argparse.Namespace, started: str, read: Result, epochs: dict[int, dict[str, Any]]
) -> str:
    """A block to paste into BENCHMARKS.md: the command, the figures, pass/fail."""
    cmd = shlex.join([".venv/bin/python", "benchmarks/table_bench.py", *sys.argv[1:]])
    rows = ["| figure | value | target | met |", "| --- | --- | --- | --- |"]
    if not math.isnan(read["csv_s"]):  # measured (not --skip-read)
        rows.append(
            f"| read + encode {args.rows:,} x 30 CSV (`tabular.csv`, val_size {VAL_SIZE}) | "
            f"{read['csv_s']:.2f} s (parse alone {read['parse_s']:.2f} s) | "
            f"<= {READ_TARGET_S:.0f} s | {'yes' if read['csv_s'] <= READ_TARGET_S else 'NO'} |"
        )
    for batch, e in epochs.items():
        ratio = e["runner"]["samples_per_s"] / e["hand"]["samples_per_s"]
        rows.append(
            f"| epoch, batch {batch}: runner / hand-written (samples/s) | {ratio:.2f}x "
            f"({e['runner']['samples_per_s']:,.0f} / {e['hand']['samples_per_s']:,.0f}; best "
            f"epochs {e['best']['runner'] / e['best']['hand']:.2f}x) | "
            f">= {EPOCH_TARGET}x | {'yes' if ratio >= EPOCH_TARGET else 'NO'} |"
        )
    return "\n".join(
        [
            "Summary (for BENCHMARKS.md)",
            "```bash",
            f"{cmd}        # {started}, git {git_version()}, medians of {args.repeat}",
            "```",
            *rows,
        ]
    )


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="A 1M-row CSV: tabular.csv read + encode time; runner vs hand-written epoch."
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated CSV")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; median reported")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[256, 1024], help="epoch batch sizes"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated CSV")
    parser.add_argument(
        "--dir", type=Path, help="folder for the CSV (default: a new temporary folder)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile one tabular.csv call (done anyway when the read misses its target)",
    )
    parser.add_argument("--skip-read", action="store_true", help="skip the read + encode timing")
    parser.add_argument("--skip-epoch", action="store_true", help="skip the epoch comparison")
    parser.add_argument(
        "--threads",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="trainer.threads for the runner's setup; the hand-written loop uses the same "
        "(default: %(default)s, the runner's own choice)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.rows < 100:
        parser.error("--repeat must be at least 1 and --rows at least 100")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Generate the CSV, run the selected measurements and print the report."""
    args = parse_args(argv)
    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="runner-table-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    note(f"writing {args.rows:,} rows to {folder} ...")
    path, gen_s, writer = write_table(args.rows, folder)
    note(f"  {gen_s:.1f} s")
    sections = [table_report(args, path, gen_s, writer)]
    read: Result = {"csv_s": math.nan, "parse_s": math.nan}
    epochs: dict[int, dict[str, Any]] = {}
    try:
        if not args.skip_read:
            read, shape = bench_read(path, args.repeat)
            profile = None
            if args.profile or read["csv_s"] > READ_TARGET_S:
                note("profiling one tabular.csv call ...")
                profile = profile_read(path)
            sections.append(read_report(read, shape, profile))
        if not args.skip_epoch:
            for batch in args.batch_sizes:
                epochs[batch] = bench_epochs(path, batch, args.repeat, args.threads)
            sections.append(epoch_report(epochs))
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
            if args.dir is None:
                folder.rmdir()
    if args.keep:
        sections[0] += f"\nkept: {path}"
    sections.append(summary(args, started, read, epochs))
    rule = "=" * 100
    top = header(args, started, load_start)
    print("\n".join([rule, top, *(f"{rule}\n{s}" for s in sections), rule]))


if __name__ == "__main__":
    main()
