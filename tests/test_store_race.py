"""A new store's schema created by a process outside the runner's lock (the MLflow UI, a
notebook) at the same time as the runner opens it: the runner waits for it, a sweep stays
grouped, and a sweep whose start fails stops before any job (issue 15)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT, run_cli, store_uri

QUIET = ["trainer.progress=none", "trainer.log_model=false", "trainer.plots=false"]

# A plain MLflow client, as a UI or a notebook polls a store: it takes no runner lock.
# Commands on stdin: "loop URI" starts polling URI, "stop" ends it and reports.
PLAIN_CLIENT = r"""
import json, sys, threading, time
from mlflow.tracking import MlflowClient

def poll(uri, stop, outcome):
    while not stop.is_set():
        try:
            MlflowClient(uri).search_experiments()
            outcome["ok"] += 1
        except Exception as err:  # its own errors are its business: it keeps polling
            outcome["errors"].append(f"{type(err).__name__}: {str(err).splitlines()[0]}")
        time.sleep(0.05)

print("ready", flush=True)
for line in sys.stdin:
    command, _, argument = line.strip().partition(" ")
    if command == "loop":
        uri = argument
        stop, outcome = threading.Event(), {"ok": 0, "errors": []}
        poller = threading.Thread(target=poll, args=(uri, stop, outcome))
        poller.start()
    elif command == "stop":
        stop.set()
        poller.join()
        # Once the runner is done, the store serves this client too.
        try:
            outcome["experiments"] = [e.name for e in MlflowClient(uri).search_experiments()]
        except Exception as err:
            outcome["experiments"] = [f"{type(err).__name__}: {err}"]
        print(json.dumps(outcome), flush=True)
"""

# The runner's way in: open_store. Commands on stdin: "open URI"; it answers whether it
# opened, and how often it found another process's store file in place of its own
# (preempted), waited for that process's schema creation, or failed and opened again.
RUNNER_OPEN = r"""
import json, logging, sys, time
from runner.tracking.store import open_store

class Count(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        if message.startswith("waiting for another process"):
            counts["waited"] += 1
        elif message.startswith("another process created"):
            counts["preempted"] += 1
        elif "opening it again" in message:
            counts["retried"] += 1

logger = logging.getLogger("runner.tracking")
logger.setLevel(logging.INFO)
logger.addHandler(Count())
print("ready", flush=True)
for line in sys.stdin:
    uri = line.strip().partition(" ")[2]
    counts = {"waited": 0, "retried": 0, "preempted": 0}
    started = time.monotonic()
    try:
        client, experiment_id = open_store(uri, "race", None)
        run_id = client.create_run(experiment_id).info.run_id
        client.set_terminated(run_id)
        answer = {"ok": True, "experiment_id": experiment_id}
    except Exception as err:
        answer = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    answer.update(counts, seconds=round(time.monotonic() - started, 2))
    print(json.dumps(answer), flush=True)
"""


class Worker:
    """A Python process that takes one-line commands and answers in kind (it says "ready"
    once its imports are done; commands sent before wait in its stdin)."""

    def __init__(self, code: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=PROJECT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.readline() == "ready"

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def readline(self) -> str:
        line = self.proc.stdout.readline()
        assert line, f"worker exited with {self.proc.wait(timeout=30)}"
        return line.strip()

    def ask(self, line: str) -> dict:
        self.send(line)
        return json.loads(self.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


# Who starts first, and how long after the other began (seconds): the plain client once the
# runner took its lock to open the store, or the runner once the plain client's store file
# appeared (the schema then takes seconds to make).
TRIES = [
    ("plain", 0.0), ("plain", 0.1), ("plain", 0.2), ("plain", 0.4), ("plain", 0.6),
    ("plain", 0.8), ("plain", 1.0), ("runner", 0.0), ("runner", 0.2), ("runner", 0.5),
]  # fmt: skip


def test_the_runner_opens_a_store_another_process_is_creating_ten_times_out_of_ten(tmp_path):
    # Both stay up for all tries: each try's store is new to both, so each try pays for
    # the schema's creation but not for the imports.
    plain, runner = Worker(PLAIN_CLIENT), Worker(RUNNER_OPEN)
    answers = []
    try:
        plain.wait_ready()
        runner.wait_ready()
        for i, (first, delay) in enumerate(TRIES):
            db = tmp_path / f"try{i}" / "mlflow.db"
            uri = f"sqlite:///{db}"
            if first == "plain":
                plain.send(f"loop {uri}")
                wait_for_file(db)
                time.sleep(delay)
                runner.send(f"open {uri}")
            else:
                runner.send(f"open {uri}")
                wait_for_file(db.with_name("mlflow.db.lock"))
                time.sleep(delay)
                plain.send(f"loop {uri}")
            answer = json.loads(runner.readline())  # opened, and a run made and ended in it
            answer["plain"] = plain.ask("stop")
            answers.append(answer)
            # The store is whole: the plain client sees the runner's experiment.
            assert "race" in answer["plain"]["experiments"], answer
    finally:
        plain.close()
        runner.close()
    paths = ("preempted", "waited", "retried")
    summary = [
        (first, a["ok"], *(a[k] for k in paths), a["seconds"], len(a["plain"]["errors"]))
        for (first, _), a in zip(TRIES, answers, strict=True)
    ]
    print(f"tries (first, opened, {', '.join(paths)}, seconds, plain client's errors):", summary)
    assert all(a["ok"] for a in answers), answers
    # The race is real: in most tries the runner met the other process's schema half made.
    assert sum(any(a[k] for k in paths) for a in answers) >= 5, summary


def test_a_sweep_started_while_another_process_creates_its_store_stays_grouped(tmp_path):
    plain = Worker(PLAIN_CLIENT)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", "seed=1,2", "trainer.epochs=2", *QUIET],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        plain.wait_ready()
        # The plain client opens the new store in the second the sweep's launcher does.
        wait_for_file(tmp_path / "outputs" / "mlflow.db.lock")
        plain.send(f"loop {store_uri(tmp_path)}")
        out, err = sweep.communicate(timeout=300)
        outcome = plain.ask("stop")
    finally:
        sweep.kill()
        plain.close()
    met = [line for line in out.splitlines() if "another process" in line]
    print("the sweep's launcher met the plain client:", met, "| plain client:", outcome)
    assert sweep.returncode == 0, err[-3000:]
    assert "raised" not in err  # no callback failure turned into a warning
    client = MlflowClient(store_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("xor").experiment_id])
    parents = [r for r in runs if r.data.tags.get("runner.is_sweep") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    jobs = [r for r in runs if r is not parents[0]]
    assert len(jobs) == 2
    for run in jobs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id


def test_a_sweep_whose_start_fails_runs_no_job(tmp_path):
    (tmp_path / "blocker").write_text("a file where the store's folder should be")
    db = tmp_path / "blocker" / "store" / "mlflow.db"
    proc = run_cli(
        "-m", "seed=1,2", "trainer.epochs=2", *QUIET, f"tracking.uri=sqlite:///{db}",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith(
        f"error: the sweep could not start: cannot open the MLflow store sqlite:///{db}: "
    ), line
    assert "Not a directory" in line
    assert "Launching" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob("runner.log"))  # no job ran
    assert not list(tmp_path.rglob("mlflow.db"))  # and no run went anywhere else


# Jobs of a parallel sweep record the same data set at the same moment: MLflow looks the
# data set up and then inserts it, so all but one break its unique key on the first try.
SAME_DATA_AT_ONCE = r"""
import multiprocessing as mp, sys
from mlflow.tracking import MlflowClient
from runner.tracking.mlflow_tracker import log_training_data

DATASET = dict(name="xor", digest="0123abcd", source_type="code", source="{}",
               schema="{}", profile="{}")

def job(uri, experiment_id, barrier, answers):
    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id).info.run_id
    barrier.wait()
    log_training_data(client, run_id, DATASET)
    answers.put(run_id)

if __name__ == "__main__":
    uri, rounds, jobs = sys.argv[1], 3, 6
    client = MlflowClient(uri)
    for i in range(rounds):
        experiment_id = client.create_experiment(f"round{i}")
        barrier, answers = mp.Barrier(jobs), mp.Queue()
        procs = [mp.Process(target=job, args=(uri, experiment_id, barrier, answers))
                 for _ in range(jobs)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        for _ in range(jobs):
            print(answers.get())
"""


def test_parallel_jobs_recording_the_same_data_set_all_get_it(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", SAME_DATA_AT_ONCE, uri],
        cwd=PROJECT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "was not recorded" not in proc.stderr, proc.stderr[-3000:]
    run_ids = proc.stdout.split()
    assert len(run_ids) == 18
    client = MlflowClient(uri)
    for run_id in run_ids:
        (recorded,) = client.get_run(run_id).inputs.dataset_inputs
        assert (recorded.dataset.name, recorded.dataset.digest) == ("xor", "0123abcd")
