"""Sweeps for real: parent and child runs, the report, parallel jobs, failures, resume."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

from runner.report import main as report_main
from runner.ui import server_env
from tests.conftest import answers, free_port, ready_store, run_cli, store_uri, tails, wait_until

QUIET = ["trainer.progress=none", "trainer.log_model=false", "trainer.plots=false"]


def split_runs(client: MlflowClient, experiment: str = "xor"):
    """(sweep parent runs, job runs) of an experiment."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("runner.is_sweep") == "true"]
    return parents, [r for r in runs if r.data.tags.get("runner.is_sweep") != "true"]


def assert_one_sweep(client: MlflowClient, n_jobs: int, epochs: int, experiment: str = "xor"):
    """One FINISHED parent with n_jobs FINISHED children, each with every epoch's metrics."""
    parents, jobs = split_runs(client, experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0].info.run_id
    assert len(jobs) == n_jobs
    for run in jobs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parent
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, epochs + 1))
    return parents[0], jobs


def kept(client: MlflowClient, run, key: str) -> float:
    """A job's `key` at the epoch whose weights it kept (its tag), else its last value."""
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
    return history[int(run.data.tags.get("runner.kept_epoch", max(history)))]


def test_basic_sweep_has_a_parent_children_and_a_report(tmp_path):
    ready_store(tmp_path)
    proc = run_cli(
        "-m",
        "model=xor_linear,xor_deep",
        "optim=sgd,adam",
        "trainer.epochs=3",
        *QUIET,
        "trainer.log_model=true",
        "sweep.register=xor-best",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, tails(proc)
    client = MlflowClient(store_uri(tmp_path))
    parent, jobs = assert_one_sweep(client, 4, 3)
    combos = {(r.data.params["model.name"], r.data.params["optim.name"]) for r in jobs}
    assert combos == {(m, o) for m in ("xor_linear", "xor_deep") for o in ("sgd", "adam")}
    assert len({r.data.tags["runner.sweep"] for r in jobs}) == 1
    # The comparison table printed at the end, one row per job, and logged to the parent.
    for label in ("model=xor_linear optim=sgd", "model=xor_deep optim=adam"):
        assert label in proc.stdout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert artifacts == {
        "report/comparison.csv", "report/comparison.md", "report/configs.csv",
        "report/capacity.png", "report/curves.png",
    }  # fmt: skip
    csv_text = Path(
        client.download_artifacts(parent.info.run_id, "report/comparison.csv", str(tmp_path))
    ).read_text()
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("job,params,final val_acc,best val_acc,best epoch,final train_acc")
    by_label = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    for run in jobs:
        label = f"model={run.data.params['model.name']} optim={run.data.params['optim.name']}"
        row = by_label[label]
        assert row[1] == run.data.params["trainable_params"]
        # Final: the epoch whose weights the job kept (trainer.keep: best, as it validates).
        assert float(row[2]) == pytest.approx(kept(client, run, "val_acc"), abs=1e-4)
        best = max(m.value for m in client.get_metric_history(run.info.run_id, "val_acc"))
        assert float(row[3]) == pytest.approx(best, abs=1e-4)
        assert row[7] == "FINISHED"
    # Children named by their swept values; the parent reads like a run of its own.
    assert {r.info.run_name for r in jobs} == {
        f"{m} {o}" for m in ("xor_linear", "xor_deep") for o in ("sgd", "adam")
    }
    assert re.fullmatch(r"sweep \d\d-\d\d \d\d:\d\d:\d\d model × optim", parent.info.run_name)
    parent = client.get_run(parent.info.run_id)
    best = max(jobs, key=lambda r: kept(client, r, "val_acc"))
    assert parent.data.metrics["val_acc"] == kept(client, best, "val_acc")
    assert parent.data.tags["runner.best_run"] in {r.info.run_id for r in jobs}
    assert parent.data.params["trainer.epochs"] == "3" and "model.name" not in parent.data.params
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("Best: **") and "| job | params |" in note
    # The closing line links the runs table, its view showing the metric and swept params.
    experiment = parent.info.experiment_id
    table = f"/#/experiments/{experiment}/runs?workflowType=machine_learning"
    assert f"its jobs side by side: http://127.0.0.1:5000{table}&viewStateShareKey=runner" in (
        proc.stdout + proc.stderr
    )
    view = client.get_experiment(experiment).tags["mlflow.sharedViewState.runner"]
    assert {"metrics.`val_acc`", "params.`model.name`", "params.`optim.name`"} <= set(
        json.loads(view)["selectedColumns"]
    )
    # sweep.register: the best job's model is version 1 of the named model, alias champion.
    version = client.get_model_version_by_alias("xor-best", "champion")
    assert str(version.version) == "1" and version.run_id == parent.data.tags["runner.best_run"]
    assert f"sweep {parent.info.run_name} (run {parent.info.run_id}) by final val_acc" in (
        version.description
    )
    assert "registered 'xor-best' version 1 (models:/xor-best@champion)" in proc.stdout


def test_report_command_rebuilds_the_report_from_mlflow(tmp_path, capsys):
    ready_store(tmp_path)
    proc = run_cli(
        "-m", "model=xor_linear,xor_deep", "seed=1,2", "trainer.epochs=2", *QUIET, cwd=tmp_path
    )
    assert proc.returncode == 0, tails(proc)
    client = MlflowClient(store_uri(tmp_path))
    (parent,), jobs = split_runs(client)
    out = tmp_path / "report"
    code = report_main(
        [parent.info.run_id, "--tracking-uri", store_uri(tmp_path), "--out", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "per config, over seeds and folds:" in printed  # mean and spread over two seeds
    assert {p.name for p in out.iterdir()} == {
        "comparison.csv", "comparison.md", "configs.csv", "capacity.png", "curves.png",
    }  # fmt: skip
    assert len((out / "comparison.csv").read_text().strip().splitlines()) == 1 + 4
    # Per config: the two seeds' interval, and the paired test against the best (scipy's).
    configs = {r["config"]: r for r in csv.DictReader((out / "configs.csv").open())}
    assert set(configs) == {"model=xor_linear", "model=xor_deep"}
    values = {
        (r.data.params["model.name"], r.data.params["seed"]): kept(client, r, "val_acc")
        for r in jobs
    }
    samples = {m: [values[m, s] for s in ("1", "2")] for m in ("xor_linear", "xor_deep")}
    best, other = sorted(samples, key=lambda m: -statistics.fmean(samples[m]))
    assert configs[f"model={best}"]["tied_with_best"] == "True"
    row = configs[f"model={other}"]
    assert row["n"] == "2" and row["test"] == "paired t-test (by seed)"
    if len({b - o for b, o in zip(samples[best], samples[other], strict=True)}) > 1:
        p = scipy_stats.ttest_rel(samples[other], samples[best]).pvalue
        assert float(row["p_vs_best"]) == pytest.approx(p, rel=1e-6)
    low, high = (float(configs[f"model={best}"][k]) for k in ("ci95_low", "ci95_high"))
    if len(set(samples[best])) > 1:
        expected = scipy_stats.t.interval(
            0.95, 1, loc=statistics.fmean(samples[best]), scale=scipy_stats.sem(samples[best])
        )  # (an accuracy's interval stops at 0 and 1)
        expected = (max(expected[0], 0.0), min(expected[1], 1.0))
        assert (low, high) == pytest.approx(expected, rel=1e-6)
    assert printed.count("\nbest: model=") == 1
    # By experiment name too.
    assert report_main(["xor", "--tracking-uri", store_uri(tmp_path), "--out", str(out)]) == 0
    capsys.readouterr()
    assert report_main(["xr", "--tracking-uri", store_uri(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        "error: no experiment or run named 'xr'. Did you mean 'xor'? Experiments: xor (store "
    )
    # A folder with no store: an error naming where it looked, and no empty store created.
    missing = tmp_path / "elsewhere" / "mlflow.db"
    assert report_main(["xor", "--tracking-uri", f"sqlite:///{missing}"]) == 1
    assert f"no MLflow store at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_parallel_joblib_sweep_loses_nothing(tmp_path):
    ready_store(tmp_path)
    proc = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3,4,5,6,7,8",
        "model=xor_linear", "trainer.epochs=20", *QUIET, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, tails(proc)
    assert "database is locked" not in proc.stderr
    client = MlflowClient(store_uri(tmp_path))
    assert [e.name for e in client.search_experiments()].count("xor") == 1
    _, jobs = assert_one_sweep(client, 8, 20)
    assert sorted(int(r.data.params["seed"]) for r in jobs) == list(range(1, 9))
    # Threads per job: 2 cores shared by 2 parallel jobs.
    assert all(r.data.params["trainer.threads"] == "auto" for r in jobs)


def test_a_failing_job_does_not_stop_the_others(tmp_path):
    ready_store(tmp_path)
    proc = run_cli(
        "-m", "experiment=house_tiny", "optim=sgd", "optim.lr=1e6,0.01", "trainer.epochs=30",
        *QUIET, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1  # the sweep says a job failed
    assert "job 0 failed: NonFiniteLoss: loss became inf" in proc.stdout  # right away, in the log
    client = MlflowClient(store_uri(tmp_path))
    (parent,), jobs = split_runs(client, "house_tiny")
    assert parent.info.status == "FAILED"
    status = {r.data.params["optim.lr"]: r.info.status for r in jobs}
    assert status == {"1000000.0": "FAILED", "0.01": "FINISHED"}
    assert "1 of 2 jobs did not finish" in proc.stdout


def finished_runs(db: Path) -> int:
    """FINISHED runs in a store being written, read without MLflow (a sweep's parent stays
    RUNNING to its end, so these are its jobs)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05) as con:
            return con.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:
        return 0


def await_finished_jobs(
    proc: subprocess.Popen, cwd: Path, count: int, timeout: float, poll: float
) -> None:
    """Wait until the sweep `proc` launched in `cwd` has `count` FINISHED jobs (fails if it
    ends first, or `timeout` passes). The store is read only once the sweep has made it: a
    reader racing the schema migration of a new SQLite store can break it."""
    deadline = time.monotonic() + timeout
    wait_until(
        lambda: list(cwd.glob("outputs/multirun/*/*/mlflow_sweep.json")),
        "the sweep's store made", timeout, proc=proc,
    )  # fmt: skip
    db = cwd / "outputs" / "mlflow.db"
    wait_until(
        lambda: finished_runs(db) >= count, f"{count} FINISHED jobs",
        deadline - time.monotonic(), every=poll, proc=proc,
    )  # fmt: skip


def test_killed_sweep_resumes_only_the_missing_jobs(tmp_path):
    ready_store(tmp_path)
    args = [
        sys.executable, "-m", "runner", "-m", "seed=1,2,3,4,5,6", "model=xor_linear",
        "trainer.epochs=30", *QUIET,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    await_finished_jobs(proc, tmp_path, 2, timeout=120, poll=0.5)
    proc.send_signal(signal.SIGKILL)  # nothing can run: no cleanup in the sweep
    proc.wait()
    done_before = finished_runs(tmp_path / "outputs" / "mlflow.db")
    assert 2 <= done_before < 6

    rerun = run_cli(*args[3:], cwd=tmp_path)
    assert rerun.returncode == 0, tails(rerun)
    assert rerun.stdout.count("skipped job") == done_before
    client = MlflowClient(store_uri(tmp_path))
    parents, jobs = split_runs(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same sweep, reopened
    finished = [r for r in jobs if r.info.status == "FINISHED"]
    assert sorted(int(r.data.params["seed"]) for r in finished) == [1, 2, 3, 4, 5, 6]
    assert all(r.info.status != "RUNNING" for r in jobs)  # the job killed mid-way was ended
    # The report covers all six jobs, the reused ones included.
    assert len([line for line in rerun.stdout.splitlines() if line.startswith("seed=")]) == 6

    forced = run_cli(*args[3:], "sweep.skip_finished=false", cwd=tmp_path)
    assert forced.returncode == 0 and "skipped job" not in forced.stdout


def test_parallel_sweep_against_a_tracking_server(tmp_path):
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=server_env(),  # as the project's servers run: no job queue (15 s of CPU)
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(f"{uri}/health"), "the MLflow server answering", 90, proc=server)
        proc = run_cli(
            "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3,4",
            "model=xor_linear", "trainer.epochs=5", "trainer.progress=none", "trainer.plots=false",
            "trainer.log_model=false", cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri},
        )  # fmt: skip
        assert proc.returncode == 0, tails(proc)
        assert not (tmp_path / "outputs" / "mlflow.db").exists()
        client = MlflowClient(uri)
        parent, _ = assert_one_sweep(client, 4, 5)
        assert (
            report_main([parent.info.run_id, "--tracking-uri", uri, "--out", str(tmp_path / "r")])
            == 0
        )
        assert len((tmp_path / "r" / "comparison.csv").read_text().strip().splitlines()) == 5
        assert (tmp_path / "server-artifacts").exists()  # artifacts went through the server
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_submitit_local_launcher(tmp_path):
    ready_store(tmp_path)
    proc = run_cli(
        "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "seed=1,2",
        "model=xor_linear", "trainer.epochs=3", *QUIET, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, tails(proc)
    assert_one_sweep(MlflowClient(store_uri(tmp_path)), 2, 3)


def test_optuna_search_trials_are_children_and_a_rerun_skips_them(tmp_path):
    ready_store(tmp_path)
    args = [
        "hparams_search=xor_optuna",
        "hydra.sweeper.n_trials=3",
        "trainer.epochs=3",
        "trainer.progress=none",
    ]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, tails(proc)
    assert "Best value:" in proc.stdout + proc.stderr
    client = MlflowClient(store_uri(tmp_path))
    assert_one_sweep(client, 3, 3)
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, tails(again)
    assert again.stdout.count("skipped job") == 3  # same seeded proposals, all finished


def test_a_reused_run_is_labelled_with_the_sweeps_overrides_and_linked_both_ways(tmp_path):
    """`make run`, then a sweep whose job 3 has that run's exact config: the report shows
    the reused run as the sweep's job (never `model=- optim=-`), names the command that
    made it, and the two runs point at each other."""
    from runner.config.launch import SweepInfo
    from runner.config.spec import TrackingSpec
    from runner.sweep.report import build_report, sweep_runs
    from runner.tracking import sweep_record

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("xor")

    def finished(run_tags: dict[str, str], val_acc: float) -> str:
        run = client.create_run(experiment, tags=run_tags)
        for epoch in (1, 2):
            client.log_metric(run.info.run_id, "val_acc", val_acc * epoch / 2, step=epoch)
        client.log_param(run.info.run_id, "trainable_params", "37")
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    made = finished(
        {"runner.overrides": "(none)", "runner.fingerprint": "f" * 64,
         "mlflow.source.name": "python -m runner"}, 0.9,
    )  # fmt: skip
    parent = client.create_run(experiment, tags={"runner.is_sweep": "true"}).info.run_id
    for n, (model, optim) in enumerate([("xor_linear", "sgd"), ("xor_linear", "adam")]):
        finished(
            {"runner.overrides": f"model={model} optim={optim}", "mlflow.parentRunId": parent,
             "runner.fingerprint": str(n) * 64, "runner.sweep_job": str(n)}, 0.6,
        )  # fmt: skip
    sweep = SweepInfo(tracking_uri=uri, experiment_id=experiment, parent_run_id=parent)
    spec = TrackingSpec(uri=uri, experiment="xor")
    done = sweep_record.finished_run(spec, sweep, "f" * 64, ["model=xor_deep", "optim=adam"])
    assert done.info.run_id == made
    assert client.get_run(made).data.tags[f"runner.reused_by.{parent}"] == (
        "model=xor_deep optim=adam"
    )
    parent_run = client.get_run(parent)
    report = build_report(client, sweep_runs(client, parent_run), "sweep", parent_run)
    labels = {row.run_id: row.label for row in report.rows}
    assert labels[made] == "model=xor_deep optim=adam"
    assert "model=-" not in report.text and "optim=-" not in report.text
    assert "model=xor_deep optim=adam <- run " in report.text
    assert "made by `python -m runner`" in report.text
    assert "best: model=xor_deep optim=adam" in report.text


def test_a_sweep_too_long_for_a_description_keeps_its_summary_there(tmp_path, caplog):
    """180 jobs' rows exceed what MLflow keeps of a description (8000 characters, cut with
    a warning): the parent's description then holds the per-config summary and points at
    report/comparison.md, which holds every row."""
    from runner.sweep.report import Report, log_report

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.create_run(client.create_experiment("xor")).info.run_id
    rows = "".join(f"| model.hidden=[{n}] seed={n} | 37 | 0.9 |\n" for n in range(400))
    summary = "\n## Per config, over seeds and folds\n\n| config |\n|---|\n| a |\n\nbest: a\n"
    report = Report(
        rows=[], text="", markdown=f"# sweep\n\n{rows}{summary}", csv="", figures={},
        configs_csv="config\n", verdict=["best: a"], summary=summary,
    )  # fmt: skip
    assert len(report.markdown) > 8000
    log_report(client, parent, report)
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert len(note) <= 8000 and "truncated" not in caplog.text
    assert note.startswith("The 0 jobs, one row each: `report/comparison.md`.")
    assert note.endswith("best: a")
    stored = client.download_artifacts(parent, "report/comparison.md", str(tmp_path))
    assert Path(stored).read_text() == report.markdown
