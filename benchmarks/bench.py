"""Side-by-side benchmark: plain PyTorch scripts against `python -m runner`.

Run from the repo root: `.venv/bin/python benchmarks/bench.py [--repeat N] [--skip-mnist]
[--skip-xor] [--mnist-root DIR]`. Every variant runs in its own fresh subprocess; see
benchmarks/README.md for what each figure measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

from report_table import git_version, median, table  # noqa: E402 (beside this script)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST_ROOT = (REPO_ROOT / ".." / "shared" / "datasets").resolve()
MNIST_TRAIN_SIZE = 60_000  # with data.val_size=0 the runner trains on every training image
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
BATCH_SIZE = 64
XOR_EPOCHS = 200
SEED = 1

Result = dict[str, float]

# The book's XOR setup (Raschka et al., ch. 13): data, network, loss and optimizer. Both XOR
# scripts below start with it; each is timed as a whole process and prints one JSON line at
# the end: accuracies and wall-clock marks around its training loop, so its phases line up
# with the runner's log timestamps.
XOR_SETUP = """\
import json
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(1)
np.random.seed(1)
x = np.random.uniform(low=-1, high=1, size=(200, 2))
y = np.ones(len(x))
y[x[:, 0] * x[:, 1] < 0] = 0
n_train = 100
x_train = torch.tensor(x[:n_train, :], dtype=torch.float32)
y_train = torch.tensor(y[:n_train], dtype=torch.float32)
x_valid = torch.tensor(x[n_train:, :], dtype=torch.float32)
y_valid = torch.tensor(y[n_train:], dtype=torch.float32)
batch_size = 2

model = nn.Sequential(
    nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1), nn.Sigmoid()
)
nn.init.xavier_uniform_(model[0].weight)
loss_fn = nn.BCELoss()
l1_weight = 0.01
optimizer = torch.optim.Adam(model.parameters(), lr=0.015)
num_epochs = 200
"""

# The book's own loop: a DataLoader, .item() and an accuracy per step.
XOR_BOOK_SCRIPT = (
    XOR_SETUP
    + """\
train_dl = DataLoader(TensorDataset(x_train, y_train), batch_size, shuffle=True)
loss_hist_train = [0] * num_epochs
accuracy_hist_train = [0] * num_epochs
loss_hist_valid = [0] * num_epochs
accuracy_hist_valid = [0] * num_epochs

train_start = time.time()
for epoch in range(num_epochs):
    for x_batch, y_batch in train_dl:
        pred = model(x_batch)[:, 0]
        loss = loss_fn(pred, y_batch) + l1_weight * model[2].weight.abs().sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        loss_hist_train[epoch] += loss.item()
        is_correct = ((pred >= 0.5).float() == y_batch).float()
        accuracy_hist_train[epoch] += is_correct.mean()
    loss_hist_train[epoch] /= n_train / batch_size
    accuracy_hist_train[epoch] /= n_train / batch_size
    pred = model(x_valid)[:, 0]
    loss = loss_fn(pred, y_valid)
    loss_hist_valid[epoch] = loss.item()
    is_correct = ((pred >= 0.5).float() == y_valid).float()
    accuracy_hist_valid[epoch] += is_correct.mean()
train_end = time.time()

print(json.dumps({
    "train_start": train_start,
    "train_end": train_end,
    "train_acc": float(accuracy_hist_train[-1]),
    "valid_acc": float(accuracy_hist_valid[-1]),
}))
"""
)

# The same training written lean by hand: batches cut from in-memory tensors with randperm
# (no DataLoader), losses kept as tensors (no .item() per step). A stronger baseline than
# the book's: what a careful user would write without any tool.
XOR_LEAN_SCRIPT = (
    XOR_SETUP
    + """\
history = []

train_start = time.time()
for epoch in range(num_epochs):
    order = torch.randperm(n_train)
    xs, ys = x_train[order], y_train[order]
    losses, correct = [], []
    for i in range(0, n_train, batch_size):
        x_batch, y_batch = xs[i : i + batch_size], ys[i : i + batch_size]
        pred = model(x_batch)[:, 0]
        loss = loss_fn(pred, y_batch) + l1_weight * model[2].weight.abs().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        correct.append(((pred.detach() >= 0.5).float() == y_batch).float().sum())
    with torch.no_grad():
        pred = model(x_valid)[:, 0]
        valid_loss = loss_fn(pred, y_valid).item()
        valid_acc = ((pred >= 0.5).float() == y_valid).float().mean().item()
    train_loss = torch.stack(losses).mean().item()
    history.append((train_loss, torch.stack(correct).sum().item() / n_train, valid_loss, valid_acc))
train_end = time.time()

print(json.dumps({
    "train_start": train_start,
    "train_end": train_end,
    "train_acc": history[-1][1],
    "valid_acc": history[-1][3],
}))
"""
)


# --- child processes -----------------------------------------------------------------------


@dataclass
class Child:
    """A finished child process: its output, when it started and what it cost."""

    start: float  # time.time() just before spawning: comparable with log timestamps
    wall: float  # spawn to exit, seconds
    peak_rss_mib: float
    stdout: str

    @property
    def end(self) -> float:
        """Wall-clock time at which the process had exited."""
        return self.start + self.wall

    def last_json(self) -> Result:
        """The JSON object on the last line of stdout (how workers report)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def child_env() -> dict[str, str]:
    """Our environment minus MLFLOW_TRACKING_URI, which would override tracking.store_dir."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_child(cmd: Sequence[str], cwd: Path) -> Child:
    """Run `cmd` to completion; raise SystemExit with its stderr if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=child_env(), stdout=out, stderr=err)
        # wait4 gives this child's own peak RSS; RUSAGE_CHILDREN would be the maximum over
        # every child reaped so far, hiding all variants after the largest one.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        raise SystemExit(f"bench: {shlex.join(cmd)} exited {proc.returncode}:\n{tail}")
    return Child(start, wall, usage.ru_maxrss / 1024, stdout)  # ru_maxrss is KiB on Linux


# --- the runner's log ----------------------------------------------------------------------


@dataclass
class RunnerLog:
    """The marks this benchmark needs from one runner job's log file."""

    run_id: str
    run_started: float  # the "training starts" line
    last_epoch: float  # the last "epoch E/E" line
    final: Result  # the metrics of the "final:" line
    logging_share: float  # "training took ... of which MLflow metric logging ... (P%)"


def log_time(stamp: str) -> float:
    """A logging asctime ('2026-11-28 09:12:18,203', local time) as a Unix timestamp."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def read_runner_log(cwd: Path, epochs: int) -> RunnerLog:
    """Parse the Hydra job log that one `python -m runner` wrote under `cwd`."""
    # Epoch lines reach only the file with trainer.progress=none, not the console. `cwd` is
    # fresh per job, so wherever Hydra's run dir is configured below it, there is one log.
    logs = sorted(cwd.rglob("runner.log"))
    if len(logs) != 1:
        raise SystemExit(f"bench: expected one runner.log under {cwd}, found {len(logs)}")
    run_id, run_started, last_epoch, final, share = None, None, None, {}, float("nan")
    for line in logs[0].read_text().splitlines():
        # Hydra's format: "[<asctime>][<logger>][<LEVEL>] - <message>"
        if not line.startswith("[") or "] - " not in line:
            continue
        head, message = line.split("] - ", 1)
        stamp, logger = head[1:].split("][")[:2]
        if logger == "runner" and message == "training starts":
            run_started = log_time(stamp)
        elif message.startswith("MLflow run ") and " store " in message:
            run_id = message.split()[2]  # logged by the MLflow companion once the run exists
        elif logger == "runner.epochs" and message.startswith(f"epoch {epochs}/{epochs} "):
            last_epoch = log_time(stamp)
        elif logger == "runner" and message.startswith("training took "):
            share = float(message.rsplit("(", 1)[1].rstrip("%)")) / 100
        elif logger == "runner" and message.startswith("final: "):
            pairs = [kv.split("=") for kv in message.split()[1:] if "=" in kv]
            final = {k: _closing_value(v) for k, v in pairs}
    if run_id is None or run_started is None or last_epoch is None:
        raise SystemExit(f"bench: {logs[0]} lacks 'training starts', 'MLflow run' or 'epoch' lines")
    return RunnerLog(run_id, run_started, last_epoch, final, share)


def _closing_value(text: str) -> float:
    """A value of the runner's closing line: `95.0%` is 0.95, else a plain number."""
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def runner_cmd(*overrides: str) -> list[str]:
    """`python -m runner` with Hydra overrides, on this interpreter."""
    return [sys.executable, "-m", "runner", *overrides]


# --- MNIST ---------------------------------------------------------------------------------


def mnist_model() -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    """The 784-256-128-10 MLP, its loss and Adam(lr=1e-3), seeded."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    return model, nn.CrossEntropyLoss(), torch.optim.Adam(model.parameters(), lr=1e-3)


def worker_mnist_canonical(root: Path) -> Result:
    """Variant a: torchvision dataset with per-sample transforms through a DataLoader."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    train = datasets.MNIST(str(root), train=True, transform=transform, download=False)
    test = datasets.MNIST(str(root), train=False, transform=transform, download=False)
    model, loss_fn, optimizer = mnist_model()
    loader = DataLoader(train, batch_size=BATCH_SIZE, shuffle=True)
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in DataLoader(test, batch_size=1000):
            correct += (model(x).argmax(1) == y).sum().item()
    return {
        "train_s": seconds,
        "samples_per_s": len(train) / seconds,
        "test_acc": correct / len(test),
    }


def worker_mnist_in_memory(root: Path) -> Result:
    """Variant b: tensors normalized once from dataset.data, batches cut with randperm."""
    import torch
    from torchvision import datasets

    def load(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = datasets.MNIST(str(root), train=train, download=False)
        return (ds.data.float() / 255 - MNIST_MEAN) / MNIST_STD, ds.targets

    x_train, y_train = load(True)
    x_test, y_test = load(False)
    model, loss_fn, optimizer = mnist_model()
    n = len(x_train)
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(n)
    for start in range(0, n, BATCH_SIZE):
        idx = order[start : start + BATCH_SIZE]
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        acc = (model(x_test).argmax(1) == y_test).float().mean().item()
    return {"train_s": seconds, "samples_per_s": n / seconds, "test_acc": acc}


WORKERS = {"mnist-canonical": worker_mnist_canonical, "mnist-in-memory": worker_mnist_in_memory}


def bench_mnist_worker(name: str, root: Path, workdir: Path) -> Result:
    """Run one MNIST worker in a fresh interpreter; its figures plus wall time and RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--mnist-root"]
    child = run_child([*cmd, str(root)], workdir)
    return {**child.last_json(), "wall_s": child.wall, "rss_mib": child.peak_rss_mib}


def bench_mnist_runner(root: Path, workdir: Path, data_path: str = "auto") -> Result:
    """Variants c, d: one epoch through `python -m runner` on the given data path, timed from
    its log lines."""
    from mlflow.tracking import MlflowClient  # here, so the parent pays for it only when used

    cwd, store = workdir / f"cwd-{data_path}", workdir / "store"
    cwd.mkdir()
    child = run_child(
        runner_cmd(
            "experiment=mnist_mlp",
            f"data.root={root}",
            "data.val_size=0",
            "trainer.epochs=1",
            "trainer.log_model=false",
            "trainer.plots=false",
            "trainer.progress=none",
            f"trainer.data_path={data_path}",
            f"tracking.store_dir={store}",
        ),
        cwd,
    )
    log = read_runner_log(cwd, epochs=1)
    run = MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_run(log.run_id)
    seconds = log.last_epoch - log.run_started
    return {
        "train_s": seconds,
        "samples_per_s": MNIST_TRAIN_SIZE / seconds,
        "test_acc": run.data.metrics["test_acc"],
        "wall_s": child.wall,
        "rss_mib": child.peak_rss_mib,
        "logging_share": log.logging_share,
    }


# --- XOR -----------------------------------------------------------------------------------


def bench_xor_script(workdir: Path, name: str, source: str) -> Result:
    """A plain XOR script (the book's, or the lean one), process start to exit."""
    script = workdir / f"{name}.py"
    script.write_text(source)
    child = run_child([sys.executable, str(script)], workdir)
    out = child.last_json()
    return {
        "wall_s": child.wall,
        "to_train_s": out["train_start"] - child.start,
        "train_s": out["train_end"] - out["train_start"],
        "after_s": child.end - out["train_end"],
        "rss_mib": child.peak_rss_mib,
        "valid_acc": out["valid_acc"],
    }


def bench_xor_runner(workdir: Path) -> tuple[Result, Result]:
    """The runner's default XOR job twice: on a new store, then on the store it created."""
    store = workdir / "store"
    results = []
    for i in range(2):
        cwd = workdir / f"cwd{i}"  # a folder per job: one runner.log in each
        cwd.mkdir()
        cmd = runner_cmd(
            "model=xor_deep", "optim=adam", "trainer.progress=none", f"tracking.store_dir={store}"
        )
        child = run_child(cmd, cwd)
        log = read_runner_log(cwd, epochs=XOR_EPOCHS)
        results.append(
            {
                "wall_s": child.wall,
                "to_train_s": log.run_started - child.start,
                "train_s": log.last_epoch - log.run_started,
                "after_s": child.end - log.last_epoch,
                "rss_mib": child.peak_rss_mib,
                "valid_acc": log.final.get("val_acc", float("nan")),
                "logging_share": log.logging_share,
            }
        )
    return results[0], results[1]


# --- report --------------------------------------------------------------------------------


def note(message: str) -> None:
    """Progress for the person waiting; stderr, so stdout holds only the report."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def header(args: argparse.Namespace, started: str, load_start: Sequence[float]) -> str:
    """The command line and the conditions the figures were measured under."""
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "torchvision", "mlflow"))

    def load(values: Sequence[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    return "\n".join(
        [
            f"command: {shlex.join([sys.executable, *sys.argv])}",
            f"cwd:     {Path.cwd()}",
            f"date:    {started} to {time.strftime('%H:%M:%S')}",
            f"runner:  git {git_version()}",
            f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {versions}",
            # Other users' processes skew the figures; the load average shows how much.
            f"load average (1/5/15 min): start {load(load_start)}; end {load(os.getloadavg())}",
            f"repeats: {args.repeat} (figures are per-variant medians)",
        ]
    )


def mnist_report(
    canonical: Result, in_memory: Result, runner: Result, loader: Result, root: Path
) -> str:
    """The MNIST table, ratios and what each figure means."""
    rows = [
        ("a. canonical (torchvision + DataLoader)", canonical),
        ("b. hand-written in-memory (randperm)", in_memory),
        ("c. python -m runner (epoch incl. 1 val pass)", runner),
        ("d. the same, trainer.data_path=loader", loader),
    ]
    body = table(
        ["variant", "samples/s", "train s", "test acc", "wall s", "peak RSS MiB"],
        [
            [
                name,
                f"{r['samples_per_s']:,.0f}",
                f"{r['train_s']:.2f}",
                f"{r['test_acc']:.4f}",
                f"{r['wall_s']:.2f}",
                f"{r['rss_mib']:.0f}",
            ]
            for name, r in rows
        ],
    )
    return "\n".join(
        [
            f"MNIST: MLP 784-256-128-10, Adam lr 1e-3, batch {BATCH_SIZE}, one epoch over "
            f"{MNIST_TRAIN_SIZE:,} training images",
            f"data: {root}",
            body,
            f"runner / canonical    (samples/s): "
            f"{runner['samples_per_s'] / canonical['samples_per_s']:.2f}x",
            f"runner / hand-written (samples/s): "
            f"{runner['samples_per_s'] / in_memory['samples_per_s']:.2f}x",
            f"runner loader path / memory path (samples/s): "
            f"{loader['samples_per_s'] / runner['samples_per_s']:.2f}x "
            f"(same test acc: {loader['test_acc'] == runner['test_acc']})",
            f"runner: MLflow metric logging {100 * runner['logging_share']:.1f}% of training time "
            "(the runner's own 'training took' log line)",
            "train s: a, b = the epoch loop only (a's includes the DataLoader's per-sample",
            "  ToTensor+Normalize, which is part of its loop); c = runner log line 'training",
            "  starts' to 'epoch 1/1': the epoch plus one validation pass over the 10,000",
            "  test images (data.val_size=0), train accuracy, and the run's setup logging (params,",
            "  config, summary, .hydra) - so c slightly understates the runner's loop throughput.",
            "test acc: a, b computed in the worker; c read back from the MLflow store (test_acc).",
            "wall s / peak RSS: whole process, imports and data loading included.",
        ]
    )


def xor_report(book: Result, lean: Result, first: Result, second: Result) -> str:
    """The XOR table, ratios and what each figure means."""
    rows = [
        ("book script (no logging)", book),
        ("lean hand-written script (no logging)", lean),
        ("python -m runner, new store", first),
        ("python -m runner, existing store", second),
    ]
    body = table(
        ["variant", "wall s", "start->train s", "train s", "after s", "peak RSS MiB", "valid acc"],
        [
            [
                name,
                f"{r['wall_s']:.2f}",
                f"{r['to_train_s']:.2f}",
                f"{r['train_s']:.2f}",
                f"{r['after_s']:.2f}",
                f"{r['rss_mib']:.0f}",
                f"{r['valid_acc']:.4f}",
            ]
            for name, r in rows
        ],
    )
    return "\n".join(
        [
            f"XOR (Raschka ch. 13): 2-4-4-1 ReLU net, BCE + L1 0.01, Adam lr 0.015, batch 2, "
            f"{XOR_EPOCHS} epochs",
            body,
            f"runner / book (wall): new store {first['wall_s'] / book['wall_s']:.2f}x, "
            f"existing store {second['wall_s'] / book['wall_s']:.2f}x",
            f"runner / book (train): new store {first['train_s'] / book['train_s']:.2f}x, "
            f"existing store {second['train_s'] / book['train_s']:.2f}x",
            f"runner / lean script (wall): new store {first['wall_s'] / lean['wall_s']:.2f}x, "
            f"existing store {second['wall_s'] / lean['wall_s']:.2f}x",
            f"runner: MLflow metric logging {100 * first['logging_share']:.1f}% / "
            f"{100 * second['logging_share']:.1f}% of training time",
            "wall s: process start to exit, imports included.",
            "start->train s: process start to the first training step (runner: its 'training",
            "  starts' log line; scripts: their own clock before their loop).",
            "train s: runner = that line to the last 'epoch 200/200' line (includes the run's",
            "  setup logging and buffered per-epoch metric writes); book = its epoch loop.",
            "after s: end of training to process exit (runner: test/final metrics, plots,",
            "  model logging, ending the run; both: interpreter shutdown).",
        ]
    )


def run_mnist(args: argparse.Namespace, workdir: Path) -> str:
    """All MNIST variants, `--repeat` times, interleaved so load drifts hit each alike."""
    runs: dict[str, list[Result]] = {"canonical": [], "in_memory": [], "runner": [], "loader": []}
    for i in range(args.repeat):
        rep = workdir / f"mnist{i}"
        rep.mkdir()
        for key, name in (("canonical", "mnist-canonical"), ("in_memory", "mnist-in-memory")):
            note(f"MNIST {i + 1}/{args.repeat}: {key} ...")
            runs[key].append(bench_mnist_worker(name, args.mnist_root, rep))
            note(f"  {runs[key][-1]['samples_per_s']:,.0f} samples/s")
        for key, data_path in (("runner", "auto"), ("loader", "loader")):
            note(f"MNIST {i + 1}/{args.repeat}: python -m runner trainer.data_path={data_path} ...")
            runs[key].append(bench_mnist_runner(args.mnist_root, rep, data_path))
            note(f"  {runs[key][-1]['samples_per_s']:,.0f} samples/s")
    return mnist_report(
        median(runs["canonical"]),
        median(runs["in_memory"]),
        median(runs["runner"]),
        median(runs["loader"]),
        args.mnist_root,
    )


def run_xor(args: argparse.Namespace, workdir: Path) -> str:
    """Both plain scripts and the runner (new, then existing store), `--repeat` times."""
    book, lean, first, second = [], [], [], []
    for i in range(args.repeat):
        rep = workdir / f"xor{i}"  # a fresh store per repeat, so "new store" stays new
        rep.mkdir()
        note(f"XOR {i + 1}/{args.repeat}: book script ...")
        book.append(bench_xor_script(rep, "xor_book", XOR_BOOK_SCRIPT))
        note(f"  {book[-1]['wall_s']:.2f} s")
        note(f"XOR {i + 1}/{args.repeat}: lean script ...")
        lean.append(bench_xor_script(rep, "xor_lean", XOR_LEAN_SCRIPT))
        note(f"  {lean[-1]['wall_s']:.2f} s")
        note(f"XOR {i + 1}/{args.repeat}: python -m runner, twice ...")
        a, b = bench_xor_runner(rep)
        first.append(a)
        second.append(b)
        note(f"  {a['wall_s']:.2f} s, {b['wall_s']:.2f} s")
    return xor_report(median(book), median(lean), median(first), median(second))


ACCURACY_RUNS = [  # experiment, what it must reach, the book's or LeCun's figure
    ("mnist_mlp", "test acc >= 0.980 in 10 epochs", lambda acc: acc >= 0.980),
    ("mnist_mlp_large", "test acc >= 0.985 (LeCun's best plain MLP: 0.9847)", lambda a: a >= 0.985),
    (
        "mnist_ch11",
        "test acc 0.945 +/- 0.007 (book ch. 11: 0.9451)",
        lambda a: abs(a - 0.945) <= 0.007,
    ),
]


def run_accuracy(args: argparse.Namespace, workdir: Path) -> str:
    """Train the accuracy configs in full and read their test accuracy back from MLflow."""
    from mlflow.tracking import MlflowClient

    rows = []
    for experiment, target, ok in ACCURACY_RUNS:
        note(f"accuracy: experiment={experiment} ...")
        cwd, store = workdir / f"acc-{experiment}", workdir / f"acc-{experiment}-store"
        cwd.mkdir()
        cmd = runner_cmd(
            f"experiment={experiment}", f"data.root={args.mnist_root}", "trainer.progress=none",
            "trainer.log_model=false", "trainer.plots=false", f"tracking.store_dir={store}",
        )  # fmt: skip
        child = run_child(cmd, cwd)
        log = read_runner_log(cwd, epochs=child_epochs(cwd))
        acc = MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_run(log.run_id).data.metrics
        rows.append(
            [experiment, f"{acc['test_acc']:.4f}", target, "yes" if ok(acc["test_acc"]) else "NO",
             f"{child.wall:.0f}", f"{child.peak_rss_mib:.0f}"]
        )  # fmt: skip
    body = table(["experiment", "test acc", "target", "met", "wall s", "peak RSS MiB"], rows)
    return f"MNIST accuracy (full runs of the shipped experiment configs)\n{body}"


def child_epochs(cwd: Path) -> int:
    """trainer.epochs of the one run under `cwd`, from Hydra's saved config."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(next(cwd.rglob(".hydra/config.yaml"))).trainer.epochs)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Plain PyTorch vs `python -m runner`: MNIST throughput and XOR wall time."
    )
    parser.add_argument(
        "--mnist-root",
        type=Path,
        default=DEFAULT_MNIST_ROOT,
        help="folder holding MNIST/raw/ (default: %(default)s)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant; median reported")
    parser.add_argument("--skip-mnist", action="store_true", help="skip the MNIST comparison")
    parser.add_argument("--skip-xor", action="store_true", help="skip the XOR comparison")
    parser.add_argument(
        "--accuracy", action="store_true", help="also train the MNIST accuracy configs in full"
    )
    # Internal: the MNIST variants re-run this file in a fresh interpreter.
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.mnist_root = args.mnist_root.expanduser().resolve()
    if not args.skip_mnist and not (args.mnist_root / "MNIST" / "raw").is_dir():
        parser.error(f"no MNIST/raw/ under {args.mnist_root}; pass --mnist-root or --skip-mnist")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run the selected comparisons and print the summary."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args.mnist_root)))
        return
    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
    sections = []
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        if not args.skip_mnist:
            sections.append(run_mnist(args, Path(tmp)))
        if not args.skip_xor:
            sections.append(run_xor(args, Path(tmp)))
        if args.accuracy:
            sections.append(run_accuracy(args, Path(tmp)))
    rule = "=" * 100
    top = header(args, started, load_start)
    print("\n".join([rule, top, *(f"{rule}\n{s}" for s in sections), rule]))


if __name__ == "__main__":
    main()
