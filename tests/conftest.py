"""Shared fixtures: tiny IDX files in torchvision's layout, and a real `python -m runner`."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from runner.components.plugins import load_components

PROJECT = Path(__file__).resolve().parents[1]
load_components([])  # the built-in registry entries, as validation would load them
T = TypeVar("T")


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (the MNIST format: magic, dims, raw bytes)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_vision_dataset(root: Path, folder: str, n_train: int = 120, n_test: int = 40) -> Path:
    """Tiny learnable MNIST-format files: each class lights its own band of rows."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label : 2 * label + 3, :] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A data root holding tiny MNIST/raw and FashionMNIST/raw files."""
    root = tmp_path / "data"
    make_vision_dataset(root, "MNIST")
    make_vision_dataset(root, "FashionMNIST")
    return root


def pause_layer(seconds: float) -> str:
    """A plugin module registering `pause`: a layer that passes its input on after
    `seconds` while training, so that an epoch lasts a known least time whatever the
    machine's load (one pause per batch)."""
    return f"""
import time

from torch import nn

from runner.registry import LAYERS


@LAYERS.register("pause", output="same")
class Pause(nn.Module):
    def forward(self, x):
        if self.training:
            time.sleep({seconds})
        return x
"""


def paused_model(batch_size: int) -> list[str]:
    """Overrides for a linear XOR model behind the `pause` layer (`pause_layer.py` in the
    launch folder)."""
    return [
        "plugins=[pause_layer]", "model=xor_linear", f"trainer.batch_size={batch_size}",
        "model.layers=[{layer:pause},{layer:linear,out_features:1},{layer:sigmoid}]",
    ]  # fmt: skip


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = 300,
    env: dict | None = None,
    module: str = "runner",
) -> subprocess.CompletedProcess:
    """Run `python -m runner` (or another module) for real in `cwd`, whose outputs/ holds
    the MLflow store; no tracking server comes from the environment. A single run logs
    through the MLflow companion whatever the core count (`env` may say otherwise)."""
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env["RUNNER_COMPANION"] = "1"
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@functools.cache
def _empty_store() -> Path:
    """An empty embedded store, made once in this test process by the runner's own code."""
    from runner.tracking import embedded_store, mlflow_internals, sqlite_file

    uri, artifacts = embedded_store(tempfile.mkdtemp(prefix="runner-empty-store-"))
    mlflow_internals.create_database_store(uri, artifacts)
    return sqlite_file(uri)


def ready_store(cwd: Path) -> Path:
    """Give `cwd` the empty MLflow store that a first run launched there would create
    (outputs/mlflow.db: the schema, and MLflow's Default experiment with its artifacts in
    outputs/mlartifacts), copied from one that this test process created once with the
    runner's own code. For tests of something else than a store's creation: they skip its
    schema migrations (about 1.7 s of CPU each). Returns the store's file."""
    import sqlite3

    from runner.tracking import embedded_store, sqlite_file

    uri, artifacts = embedded_store(str(cwd / "outputs"))
    db = sqlite_file(uri)
    assert not db.exists(), f"{db} exists already"
    shutil.copyfile(_empty_store(), db)
    with closing(sqlite3.connect(db)) as store, store:  # as made there: its own artifact root
        store.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (f"{artifacts}/0",),
        )
    return db


def store_uri(cwd: Path) -> str:
    """The embedded store a run launched from `cwd` writes to."""
    return f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}"


def tails(proc: subprocess.CompletedProcess) -> str:
    """The ends of a finished command's stdout and stderr, for a failed assertion (a sweep
    job's error is logged on stdout)."""
    return f"stdout: ...{proc.stdout[-2500:]}\nstderr: ...{proc.stderr[-2500:]}"


def answers(url: str, timeout: float = 2) -> bool:
    """Whether `url` answers 200 now (a server still starting does not)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False


def free_port() -> int:
    """A local TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(script: Path, folder: Path, *args: str) -> str:
    """`script start --dir folder ARGS` (a cluster/ service script) for real; returns the last
    line it printed (a URI, a config path). Where the service cannot be installed here the
    test is skipped with the script's one-line reason; any other failure fails it."""
    start = subprocess.run(
        [sys.executable, str(script), "start", "--dir", str(folder), *args],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if start.returncode != 0:
        reason = (start.stderr.strip().splitlines() or ["no message"])[-1]
        stop_service(script, folder, check=False)
        if "is not installed" in reason:  # no root, or no packages: it cannot start here
            pytest.skip(f"{script.name} cannot start a service here: {reason}")
        pytest.fail(f"{script.name} did not start: {start.stdout}{start.stderr}")
    return start.stdout.strip().splitlines()[-1]


def stop_service(script: Path, folder: Path, *args: str, check: bool = True) -> None:
    """`script stop --dir folder ARGS`."""
    subprocess.run(
        [sys.executable, str(script), "stop", "--dir", str(folder), *args],
        check=check, timeout=120,
    )  # fmt: skip


SLURM_SCRIPT = PROJECT / "cluster" / "slurm.py"


@pytest.fixture(scope="session")
def slurm_conf(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The slurm.conf of the one-node cluster that every test on Slurm shares (started by
    cluster/slurm.py at the first such test, stopped at the session's end); skips where Slurm
    cannot be installed. Mark its tests `xdist_group("slurm")`: one worker runs them all."""
    folder = tmp_path_factory.mktemp("slurm")
    yield start_service(SLURM_SCRIPT, folder)
    stop_service(SLURM_SCRIPT, folder, check=False)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own, which marks the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests on the shared Slurm cluster run last, together: one cluster serves them all,
    and it starts only after tests/test_readme.py has stopped the cluster it starts itself as
    the README does (one cluster at a time on this machine: munged is shared). Under
    `--dist loadgroup`, each test marked `xdist_group` keeps to its group's worker."""
    on_slurm = [item for item in items if "slurm_conf" in getattr(item, "fixturenames", ())]
    others = [item for item in items if "slurm_conf" not in getattr(item, "fixturenames", ())]
    items[:] = others + on_slurm
    if getattr(config.option, "loadgroup", False):
        keep_xdist_groups(items)


def keep_xdist_groups(items: list[pytest.Item]) -> None:
    """Name each `xdist_group` test's group in its node id, as pytest-xdist does to send a
    group to one worker, where xdist's own renaming is lost: pytest 9.2 keeps node ids in
    `Item._id` (a `_pytest.nodeid.NodeId`), and xdist 3.8 still sets the old `Item._nodeid`,
    so `--dist loadgroup` silently spread the groups over the workers (pytest-xdist issue
    1386; checked with pytest 9.2.0 and pytest-xdist 3.8.0). Does nothing once xdist's works."""
    for item in items:
        names = {m.args[0] if m.args else m.kwargs.get("name", "default")
                 for m in item.iter_markers("xdist_group")}  # fmt: skip
        if not names or item.nodeid.rfind("@") > item.nodeid.rfind("]"):  # (xdist's test)
            continue  # not grouped, or xdist named the group
        try:
            from _pytest.nodeid import NodeId
        except ImportError as err:
            raise pytest.UsageError(
                f"{item.nodeid}: its xdist_group is lost and _pytest.nodeid moved: update "
                "tests/conftest.keep_xdist_groups for this pytest"
            ) from err
        item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(map(str, names)))}")


def wait_until(
    found: Callable[[], T],
    what: str | Callable[[], str],
    timeout: float = 120,
    every: float = 0.2,
    proc: subprocess.Popen | None = None,
) -> T:
    """Poll `found()` every `every` seconds until it gives something true, and return that;
    fail naming `what` never happened within `timeout` seconds (or, given `proc`, before
    that process ended: it will not happen then). `what` may be a function, asked only on
    failure (to say what was seen last)."""
    deadline = time.monotonic() + timeout
    while True:
        ended = proc is not None and proc.poll() is not None  # (before the last look)
        value = found()
        if value:
            return value
        if ended or time.monotonic() > deadline:
            label = what() if callable(what) else what
            if ended:
                raise AssertionError(
                    f"{label}: never, the process ended (exit status {proc.returncode})"
                )
            raise AssertionError(f"{label}: not within {timeout:g} s")
        time.sleep(every)
