"""Interrupts, kills and resume: a run is never left RUNNING and continues bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from runner.training import checkpoint
from tests.conftest import ready_store, run_cli, store_uri, tails, wait_until

ARGS = ["model=xor_noisy", "trainer.epochs=60", "trainer.checkpoint_every=1"]
ARGS += ["trainer.progress=lines", "trainer.plots=false", "trainer.log_model=false"]


def start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RUNNER_COMPANION"] = "1"  # what a SIGKILL leaves behind is the companion's to end
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *ARGS, *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: killpg reaches the MLflow companion
    )  # fmt: skip


def wait_for(proc: subprocess.Popen, text: str) -> list[str]:
    """Read the process's output until a line holds `text`, and return the lines read."""
    lines = []
    deadline = time.time() + 120
    for line in proc.stdout:
        lines.append(line)
        if text in line or time.time() > deadline:
            break
    return lines


def wait_for_epoch(proc: subprocess.Popen, epoch: int) -> list[str]:
    """Read the process's output until it logs `epoch`."""
    return wait_for(proc, f"epoch {epoch}/")


def runs(tmp_path: Path):
    client = MlflowClient(store_uri(tmp_path))
    exp = client.get_experiment_by_name("xor")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time"])


def final_metrics(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = ("train_loss", "train_total_loss", "train_acc", "val_loss", "val_acc")
    return {
        k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys
    }


def test_sigkill_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(tmp_path):
    ready_store(tmp_path)
    reference = run_cli(*ARGS, cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]

    proc = start(tmp_path)
    wait_for_epoch(proc, 23)
    proc.send_signal(signal.SIGKILL)  # the training process gets no chance to clean up
    proc.wait()

    # Its MLflow companion sees it gone and ends the run KILLED. Epochs it had not written
    # come back on resume from the checkpoint's history: compared in full below.
    def killed_run_ended() -> bool:
        found = runs(tmp_path)[1]
        return len(found) == 2 and found[-1].info.status != "RUNNING"

    wait_until(killed_run_ended, "the companion ending the killed run", timeout=60)
    client, (ref_run, killed) = runs(tmp_path)
    assert killed.info.status == "KILLED"

    # Resumed to fewer epochs than first asked, it FINISHES there with its model; then the
    # FINISHED run is continued to the full count: only the epoch count and what the run
    # logs at its end may differ from its config (anything else is refused by name).
    other = run_cli(*ARGS, "optim.lr=0.5", f"resume={killed.info.run_id}", cwd=tmp_path)
    assert other.returncode == 1 and "(optim.lr 0.015 -> 0.5)" in other.stderr, other.stderr
    shorter = ["trainer.epochs=40", "trainer.log_model=true"]
    resumed = run_cli(*ARGS, *shorter, f"resume={killed.info.run_id}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming at epoch" in resumed.stdout
    assert client.get_run(killed.info.run_id).info.status == "FINISHED"
    longer = run_cli(*ARGS, "trainer.log_model=true", f"resume={killed.info.run_id}",
                     cwd=tmp_path)  # fmt: skip
    assert longer.returncode == 0, longer.stderr[-2000:]
    assert "continuing run with trainer.epochs 40 -> 60" in longer.stdout
    done = client.get_run(killed.info.run_id)
    assert done.info.status == "FINISHED"
    # Every epoch once, bit for bit as the run trained 60 epochs at once.
    assert final_metrics(client, done.info.run_id) == final_metrics(client, ref_run.info.run_id)
    assert [m.step for m in client.get_metric_history(done.info.run_id, "train_loss")] == list(
        range(1, 61)
    )
    assert done.data.tags["runner.continued"] == "trainer.epochs 40 -> 60"
    assert done.data.params["trainer.epochs"] == "60"  # (the first value: MLflow keeps it)
    # Its model holds the weights it kept over all 60 epochs (trainer.keep: best, as it
    # validates), not the ones logged at epoch 40: bit for bit the uninterrupted run's.
    mlflow.set_tracking_uri(store_uri(tmp_path))
    model = mlflow.pytorch.load_model(f"runs:/{done.info.run_id}/model")
    last = checkpoint.load(Path(done.data.tags["runner.checkpoint"]))
    reference_last = checkpoint.load(Path(ref_run.data.tags["runner.checkpoint"]))
    assert (
        last["epoch"] == 60
        and done.data.tags["runner.kept_epoch"] == (ref_run.data.tags["runner.kept_epoch"])
    )
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference_last["best_model"][key]), key


def children(pid: int) -> list[int]:
    """The process ids of `pid`'s children (Linux's /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Whether a process with this id exists (a zombie too, as the runner sees it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stale_running_run_is_ended_when_the_same_config_starts_again(tmp_path):
    ready_store(tmp_path)
    proc = start(tmp_path)
    wait_for(proc, ", store ")  # the MLflow companion has started the run
    # The companion (in a session of its own) and the training process, both SIGKILLed: no
    # process is left to end the run.
    killed = [*children(proc.pid), proc.pid]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    # Gone, as the rerun checks it (`os.kill(pid, 0)`): the companion, not our child, is
    # reaped by whoever adopted it.
    wait_until(lambda: not [pid for pid in killed if alive(pid)], "both processes gone", 30)
    rerun = run_cli(*ARGS, cwd=tmp_path)
    assert rerun.returncode == 0
    assert "left RUNNING by a dead process: ended KILLED" in rerun.stdout
    _, all_runs = runs(tmp_path)
    assert [r.info.status for r in all_runs] == ["KILLED", "FINISHED"]


def test_checkpoints_cannot_run_code(tmp_path):
    ready_store(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "payload": Evil()}, bad)
    with pytest.raises(Exception, match="Weights only load failed|weights_only"):
        checkpoint.load(bad)
    proc = run_cli(*ARGS, f"resume={bad}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "resume:" in proc.stderr and "is not a readable checkpoint" in proc.stderr


def test_resume_from_the_checkpoint_file_and_refusals_of_other_configs_or_unknown_targets(
    tmp_path, capsys
):
    ready_store(tmp_path)
    cosine = "scheduler=cosine"  # its T_max is trainer.epochs: 60
    proc = start(tmp_path, cosine)
    wait_for_epoch(proc, 3)
    proc.send_signal(signal.SIGTERM)  # (tests/test_interrupts.py: signals to the whole group)
    proc.communicate(timeout=60)
    client, (run,) = runs(tmp_path)
    assert run.info.status == "KILLED"
    other = run_cli(*ARGS, cosine, "seed=7", f"resume={run.info.run_id}", cwd=tmp_path)
    assert other.returncode == 1 and "written by a different config (seed 1 -> 7)" in other.stderr
    assert f"the original run (resume= aside), which were: {' '.join([*ARGS, cosine])}. Only" in (
        other.stderr
    ), other.stderr
    unknown = run_cli(*ARGS, cosine, "resume=0123456789abcdef", cwd=tmp_path)
    assert (
        unknown.returncode == 1 and "neither a checkpoint file nor an MLflow run" in unknown.stderr
    )
    # More epochs would go on from a schedule annealed over 60 (a cosine at lr 0): refused.
    longer = run_cli(*ARGS, cosine, "trainer.epochs=70", f"resume={run.info.run_id}", cwd=tmp_path)
    assert longer.returncode == 1, tails(longer)
    assert (
        "config error: resume: trainer.epochs 60 -> 70 with scheduler 'cosine', whose T_max is "
        "trainer.epochs" in longer.stderr
    ), tails(longer)
    assert "Start a new run with trainer.epochs=70 (no resume=)" in longer.stderr
    assert client.get_run(run.info.run_id).info.status == "KILLED"  # untouched
    # The checkpoint file's path continues the run as well as its id does.
    resumed = run_cli(*ARGS, cosine, f"resume={run.data.tags['runner.checkpoint']}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 60
    # The seconds it spent KILLED, while the refused commands above ran, are not its own:
    # the sweep report's wall time leaves them out.
    paused = float(done.data.tags["runner.paused_s"])
    assert 2 < paused < (done.info.end_time - done.info.start_time) / 1000 - 2, paused
    assert (run.info.end_time - run.info.start_time) / 1000 < paused  # (it ran 3 epochs)
    # It logged no model (trainer.log_model=false): predict says so in one line.
    from runner.predict import main as predict_main

    where = ["--tracking-uri", store_uri(tmp_path)]
    assert predict_main([run.info.run_id, "--input", "x.csv", "--output", "y.csv", *where]) == 1
    assert (
        f"error: run {run.info.run_id} logged no model: it ran with trainer.log_model=false"
        in capsys.readouterr().err
    )


def test_an_unwritable_artifact_store_fails_clearly_and_keeps_metrics(tmp_path):
    ready_store(tmp_path)
    ok = run_cli("trainer.epochs=2", "trainer.plots=false", "trainer.log_model=false", cwd=tmp_path)
    assert ok.returncode == 0
    artifacts = tmp_path / "outputs" / "mlartifacts"
    import shutil

    shutil.rmtree(artifacts)
    artifacts.write_text("not a folder")  # every artifact write now fails (root ignores chmod)
    proc = run_cli("trainer.epochs=5", "trainer.progress=lines", cwd=tmp_path)
    assert proc.returncode == 1
    assert "error: cannot store" in proc.stderr and "Params and metrics logged" in proc.stderr
    assert "Traceback" not in proc.stderr
    client, all_runs = runs(tmp_path)
    failed = all_runs[-1]
    assert failed.info.status == "FAILED"
    assert "cannot store" in failed.data.tags["error"]
    assert failed.data.params["trainer.epochs"] == "5"  # params logged before the failure stay


def test_a_new_run_starts_from_another_runs_weights_or_a_registered_models(tmp_path):
    ready_store(tmp_path)
    # Registered as it ends (sweep.register on a single run): version 1, alias champion.
    source = run_cli("trainer.epochs=5", "trainer.plots=false", "sweep.register=xor-net",
                     cwd=tmp_path)  # fmt: skip
    assert source.returncode == 0, source.stderr[-2000:]
    client, (first,) = runs(tmp_path)
    version = client.get_model_version_by_alias("xor-net", "champion")
    assert str(version.version) == "1" and version.run_id == first.info.run_id
    trained = checkpoint.load(Path(first.data.tags["runner.checkpoint"]))["model"]
    # Started from its weights with another optimizer: a rate so small that no step moves
    # a weight shows they are the source's, bit for bit.
    still = ["optim=sgd", "optim.lr=1e-30", "trainer.epochs=1", "trainer.plots=false"]
    started = run_cli(f"model.init_from={first.info.run_id}", *still, cwd=tmp_path)
    assert started.returncode == 0, started.stderr[-2000:]
    _, (_, new) = runs(tmp_path)
    assert new.info.run_id != first.info.run_id and new.info.status == "FINISHED"
    assert new.data.tags["runner.init_from"] == first.info.run_id
    weights = checkpoint.load(Path(new.data.tags["runner.checkpoint"]))["model"]
    assert weights.keys() == trained.keys()
    assert all(torch.equal(weights[k], trained[k]) for k in trained)

    # A registered model's weights, into a model whose layers differ: one line naming the
    # layers and both shapes, and no run.
    other = run_cli("model.init_from=models:/xor-net@champion", "model=xor_linear", cwd=tmp_path)
    assert other.returncode == 1, other.stderr[-2000:]
    assert (
        other.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "config error: model.init_from: models:/xor-net@champion does not fit model "
            "'xor_linear': model.layers[0] (linear) bias: shape [1] here, [4] there"
        )
    ), other.stderr[-2000:]
    assert len(runs(tmp_path)[1]) == 2
