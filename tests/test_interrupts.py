"""Ctrl-C and SIGTERM as a person or a scheduler sends them: to the whole foreground process
group of a real terminal (tests/terminal.py), at every moment of a run and of a sweep on
each launcher. The store is read back: a started run ends KILLED with every finished
epoch's metrics and its checkpoint, never FINISHED or FAILED, nothing is left RUNNING, no
process prints a traceback, and the printed command continues it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT, ready_store, run_cli, store_uri, wait_until
from tests.terminal import COLUMNS, Terminal

QUIET = ["trainer.progress=lines", "trainer.plots=false", "trainer.log_model=false"]
RESUME = re.compile(r"continue it with: (python -m runner .*resume=(\w+))")
LOG_LINE = re.compile(r"\[\d{4}-\d\d-\d\d [\d:,]+\]\[")  # [2026-12-07 16:19:07,655][


def terminal(cwd: Path, *args: str) -> Terminal:
    """`python -m runner ARGS` in a fresh pseudo-terminal in `cwd`."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RUNNER_COMPANION"] = "1"
    return Terminal([sys.executable, "-m", "runner", *args], cwd, env)


def finish(term: Terminal, code: int, cwd: Path) -> str:
    """Wait for the command's exit status `code`; its output, with no traceback in it, and
    no process of it left behind (the MLflow companion included)."""
    try:
        assert term.wait_exit(120) == code, term.text[-3000:]
    finally:
        term.close()
    text = term.text
    assert "Traceback" not in text, text[-3000:]
    wait_until(
        lambda: not processes_in(cwd), lambda: f"no process left (still {processes_in(cwd)})", 10
    )
    return text


def processes_in(cwd: Path) -> list[str]:
    """The command lines of the processes whose working folder is `cwd` (or below)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(cwd):
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def last_line(text: str) -> str:
    """The command's last line before its exit status."""
    return [line for line in text.split("[exit")[0].splitlines() if line.strip()][-1]


def runs(cwd: Path) -> list[tuple[str, str, int, str]]:
    """Every run in the store: id, status, epochs logged (val_loss points), name."""
    db = cwd / "outputs" / "mlflow.db"
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        return [
            (run_id, status, con.execute(
                "select count(*) from metrics where run_uuid=? and key='val_loss'", (run_id,)
            ).fetchone()[0], name)
            for run_id, status, name in con.execute(
                "select run_uuid, status, name from runs order by start_time"
            )
        ]  # fmt: skip


def checkpoint_logged(cwd: Path, run_id: str) -> bool:
    """Whether the run holds its checkpoint as an artifact."""
    client = MlflowClient(store_uri(cwd))
    return "checkpoints/last.pt" in {a.path for a in client.list_artifacts(run_id, "checkpoints")}


def test_ctrl_c_while_python_imports_records_nothing_and_says_so(tmp_path):
    term = terminal(tmp_path, *QUIET)
    # The runner catches SIGTERM once its first lines ran; torch, Hydra and MLflow are then
    # still being imported. (Before, Python itself is starting: a fixed wait sent Ctrl-C
    # there on a loaded machine, and Python printed its own traceback.)
    wait_until(lambda: term.catches(signal.SIGTERM), "the runner's signal handler", 60)
    term.ctrl_c()
    text = finish(term, 130, tmp_path)
    assert last_line(text).endswith("interrupted by Ctrl-C (SIGINT); no run was recorded")
    # The line starts over after the `^C` the terminal echoed.
    said = [line for line in term.screen if "interrupted by" in line]
    assert said == ["interrupted by Ctrl-C (SIGINT); no run was recorded"], term.screen
    assert runs(tmp_path) == []


def test_ctrl_c_mid_training_ends_killed_with_its_epochs_and_the_command_to_continue(tmp_path):
    ready_store(tmp_path)
    args = ["trainer.epochs=200", "trainer.plots=false", "trainer.log_model=false"]
    term = terminal(tmp_path, *args)  # on a terminal: the progress bar, as a person sees it
    assert term.wait_for(r"\| *([4-9]\d|1\d\d)/200 \["), term.text[-2000:]  # 40 epochs on
    term.ctrl_c()
    text = finish(term, 130, tmp_path)
    assert "stopping after this epoch" in text
    # Lines logged while the bar is on screen (this process's and the MLflow companion's)
    # each start a line of their own: none is written onto the bar's line.
    logged = [line for line in term.screen if LOG_LINE.search(line)]
    assert all(LOG_LINE.match(line) for line in logged), "\n".join(logged)
    assert any("training starts" in line for line in logged), "\n".join(term.screen)
    assert any("in experiment 'xor'" in line for line in logged), "\n".join(term.screen)
    # One bar is left, short of the last column: the `^C` echoed after it does not wrap
    # and leave a stale copy of the bar behind.
    bars = [line for line in term.screen if re.search(r"\d+/200 \[", line)]
    assert len(bars) == 1 and len(bars[0]) <= COLUMNS - 3, "\n".join(term.screen)
    ((run_id, status, epochs, _),) = runs(tmp_path)
    assert status == "KILLED" and 40 <= epochs < 200
    assert checkpoint_logged(tmp_path, run_id)
    line = last_line(text)
    assert f"after epoch {epochs}: run {run_id} ended KILLED with {epochs} epochs logged" in line
    command, named = RESUME.search(line).groups()
    assert named == run_id and command.startswith("python -m runner trainer.epochs=200 ")

    # The same command without resume= starts a new run, saying how to continue the other.
    again = terminal(tmp_path, *args)
    assert again.wait_for(f"To continue that one instead: .* resume={run_id}"), again.text[-2000:]
    again.signal_group(signal.SIGTERM)
    finish(again, 143, tmp_path)
    assert [r[1] for r in runs(tmp_path)] == ["KILLED", "KILLED"]

    # The printed command continues the first run to its end.
    resumed = run_cli(*command.split()[3:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at epoch {epochs + 1}" in resumed.stdout
    first = next(r for r in runs(tmp_path) if r[0] == run_id)
    assert first[1:3] == ("FINISHED", 200)


def test_ctrl_c_mid_training_without_the_companion_ends_killed_too(tmp_path):
    ready_store(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RUNNER_COMPANION"] = "0"  # (a one-core machine: MLflow in the training process)
    term = Terminal([sys.executable, "-m", "runner", "trainer.epochs=400", *QUIET], tmp_path, env)
    assert term.wait_for("epoch 20/"), term.text[-2000:]
    term.ctrl_c()
    text = finish(term, 130, tmp_path)
    ((run_id, status, epochs, _),) = runs(tmp_path)
    assert status == "KILLED" and 20 <= epochs < 400 and checkpoint_logged(tmp_path, run_id)
    assert f"after epoch {epochs}: run {run_id} ended KILLED" in last_line(text)


def test_sigterm_to_the_group_in_the_first_epoch_waits_for_the_store_and_ends_killed(tmp_path):
    term = terminal(tmp_path, "trainer.epochs=400", *QUIET)
    assert term.wait_for("training starts"), term.text[-2000:]
    term.signal_group(signal.SIGTERM)  # the MLflow companion may not have made the run yet
    text = finish(term, 143, tmp_path)
    ((run_id, status, epochs, _),) = runs(tmp_path)
    assert status == "KILLED" and 1 <= epochs < 400
    assert checkpoint_logged(tmp_path, run_id)
    assert f"interrupted by SIGTERM after epoch {epochs}: run {run_id} ended KILLED" in text


def test_a_second_ctrl_c_stops_within_the_epoch_and_the_run_stays_killed(tmp_path):
    # Epochs of about a second (6,000 rows in batches of 2); checkpoints every 10 epochs.
    ready_store(tmp_path)
    args = ["data.n_samples=8000", "data.n_train=6000", "trainer.epochs=50"]
    term = terminal(tmp_path, *args, *QUIET)
    assert term.wait_for("epoch 1/"), term.text[-2000:]
    term.read_for(0.2)
    term.ctrl_c()
    assert term.wait_for("stopping after this epoch")
    term.ctrl_c()
    text = finish(term, 130, tmp_path)
    assert "again: stopping at once" in text
    ((run_id, status, epochs, _),) = runs(tmp_path)
    assert status == "KILLED" and epochs >= 1
    line = last_line(text)
    logged = f"{epochs} epoch{'' if epochs == 1 else 's'} logged"
    assert f"during epoch {epochs + 1}: run {run_id} ended KILLED with {logged}" in line
    assert line.endswith("it has no checkpoint to continue from (the same command starts anew)")


def test_ctrl_c_while_the_model_and_plots_are_written_ends_killed_and_resume_writes_them(
    tmp_path,
):
    ready_store(tmp_path)
    args = ["trainer.epochs=20", "trainer.progress=lines"]  # plots and model on
    term = terminal(tmp_path, *args)
    assert term.wait_for("training took"), term.text[-2000:]  # the end of the run begins
    term.ctrl_c()
    text = finish(term, 130, tmp_path)
    ((run_id, status, epochs, _),) = runs(tmp_path)
    assert status == "KILLED" and epochs == 20
    line = last_line(text)
    assert (
        f"while the run's end (test split, plots, model) was written: run {run_id} ended "
        "KILLED with 20 epochs logged; continue it with: " in line
    )
    command, _ = RESUME.search(line).groups()
    resumed = run_cli(*command.split()[3:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "every epoch is trained: writing the run's end" in resumed.stdout
    ((_, status, epochs, _),) = runs(tmp_path)
    assert (status, epochs) == ("FINISHED", 20)
    client = MlflowClient(store_uri(tmp_path))
    assert "plots/learning_curves.png" in {a.path for a in client.list_artifacts(run_id, "plots")}
    experiment = client.get_experiment_by_name("xor").experiment_id
    models = client.search_logged_models([experiment], f"source_run_id = '{run_id}'")
    assert len(models) == 1  # (if the model was stored before the stop, not stored again)


LAUNCHERS = {
    "basic": ([], "epoch 20/"),
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "epoch 20/"),
    "submitit_local": (["hydra/launcher=submitit_local"], "epoch 20/"),
    "stacked": (["hydra/launcher=stacked"], "stacked 2: epoch 1/"),
}


@pytest.mark.parametrize(
    "launcher, sig", [("basic", "ctrl_c"), ("joblib", "sigterm"),
                      ("submitit_local", "ctrl_c"), ("stacked", "sigterm")],
)  # fmt: skip
def test_an_interrupted_sweep_ends_killed_on_every_launcher(tmp_path, launcher, sig):
    ready_store(tmp_path)
    chosen, started = LAUNCHERS[launcher]
    args = ["-m", *chosen, "seed=1,2", "trainer.epochs=100", *QUIET]
    term = terminal(tmp_path, *args)
    if launcher == "submitit_local":  # its jobs log to files: the store shows their epochs
        assert term.wait_for("#1 : seed=2", 180), term.text[-3000:]
        await_epochs(term, tmp_path, 20)
    else:
        assert term.wait_for(started, 180), term.text[-3000:]
    term.ctrl_c() if sig == "ctrl_c" else term.signal_group(signal.SIGTERM)
    text = finish(term, 130 if sig == "ctrl_c" else 143, tmp_path)
    assert "sweep interrupted by " in last_line(text)
    assert last_line(text).endswith("python -m runner " + " ".join(args))
    parent, *jobs = runs(tmp_path)
    assert parent[1] == "KILLED"
    assert jobs and all(status == "KILLED" for _, status, _, _ in jobs), jobs
    for run_id, _, epochs, _ in jobs:
        assert 1 <= epochs < 100 and checkpoint_logged(tmp_path, run_id)

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    statuses = {run_id: (status, epochs) for run_id, status, epochs, _ in runs(tmp_path)}
    assert statuses[parent[0]][0] == "FINISHED"
    assert sum(1 for s in statuses.values() if s == ("FINISHED", 100)) == 2
    # Every interrupted job goes on in its own run (a stacked member alone, from its own
    # optimizer state): none is trained twice.
    assert all(statuses[run_id] == ("FINISHED", 100) for run_id, *_ in jobs)
    assert len(statuses) == 1 + 2  # the parent and one run per seed


def test_ctrl_c_as_a_sweep_starts_starts_no_job(tmp_path):
    ready_store(tmp_path)
    args = ["-m", "hydra/launcher=joblib", "seed=1,2", "trainer.epochs=100", *QUIET]
    term = terminal(tmp_path, *args)
    assert term.wait_for("sweep run \\w+ in experiment"), term.text[-2000:]  # no job yet
    term.ctrl_c()
    text = finish(term, 130, tmp_path)
    parent, *jobs = runs(tmp_path)
    assert parent[1] == "KILLED" and jobs == []
    assert "sweep interrupted by Ctrl-C (SIGINT): sweep run" in last_line(text)


WATCHED = """
import os, signal, sys, time
from runner.training import signals, sweep_signals
signals.install()
sweep_signals.watch_sweep(sys.argv[1])
try:
    for pause in (0.05, 1.3, 1.3):  # the first two 50 ms apart: one request (an echo)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(pause)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)
    print("not interrupted")
except KeyboardInterrupt as err:
    print("interrupted by", err.signum)
"""


def test_a_sweep_takes_a_signal_repeated_at_once_as_one_and_a_third_request_stops_waiting(
    tmp_path,
):
    proc = subprocess.run(
        [sys.executable, "-c", WATCHED, str(tmp_path / "not-made-yet")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.strip() == "interrupted by 15", proc.stdout + proc.stderr
    assert proc.stderr.count("no new job starts") == 1, proc.stderr
    assert proc.stderr.count("SIGTERM again: jobs stop at once") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "not-made-yet" / "interrupted").read_text() == "15"


def await_epochs(term: Terminal, cwd: Path, epochs: int, timeout: float = 120) -> None:
    """Wait (reading the terminal) until two RUNNING runs have logged `epochs` epochs."""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for r in runs(cwd) if r[1] == "RUNNING" and r[2] >= epochs) >= 2:
            return
        term.read_for(0.2)
    raise AssertionError(f"the jobs did not reach epoch {epochs}: {runs(cwd)}")


DROPPED = """
import os, signal, sys, weakref
from runner.training import signals
signals.install()
class Thing: pass
def collected(ref):  # Python drops (and prints) what a weakref callback raises
    os.kill(os.getpid(), signal.SIGINT)
try:
    thing = Thing(); ref = weakref.ref(thing, collected); del thing
    for _ in range(10**8): pass
    print("not interrupted")
except signals.Interrupted:
    print("interrupted")
"""


def test_a_signal_landing_in_a_garbage_collector_callback_still_interrupts(tmp_path):
    done = subprocess.run([sys.executable, "-c", DROPPED], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.stdout.strip() == "interrupted", done.stdout + done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr


# Signals at 12 moments of a loop of OmegaConf work, as Hydra's composing does: before the
# fix, about a third of them ended in a ConfigKeyError ('NoneType' object has no attribute
# '_invalidate_flags_cache') raised by OmegaConf's cleanup instead of the interrupt.
IN_OMEGACONF = """
import os, random, signal, threading
from omegaconf import OmegaConf, flag_override, open_dict, read_write
from runner.training import signals
signals.install()
tree = {"a": {f"k{i}": {"x": i, "y": [1, 2, {"z": i}]} for i in range(40)}}
random.seed(0)
for _ in range(12):
    threading.Timer(random.uniform(0.01, 0.1), os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        while True:
            cfg = OmegaConf.create(tree)
            with open_dict(cfg):
                cfg.merge_with({"a": {"k1": {"x": 5}}, "new": {"q": 1}})
            with read_write(cfg), flag_override(cfg, "struct", True):
                OmegaConf.to_container(cfg, resolve=True)
            sum(range(20000))  # (Hydra's own code between OmegaConf's calls)
    except signals.Interrupted:
        print("interrupted")
    except Exception as err:
        print(type(err).__name__, str(err).splitlines()[0])
"""


def test_a_signal_while_omegaconf_changes_a_config_is_an_interrupt_not_a_config_error():
    done = subprocess.run([sys.executable, "-c", IN_OMEGACONF], capture_output=True, text=True,
                          timeout=120, cwd=PROJECT)  # fmt: skip
    assert done.stdout.splitlines() == ["interrupted"] * 12, done.stdout + done.stderr[-2000:]
