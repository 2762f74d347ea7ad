"""`python -m runner` for real: runs read back from a real MLflow store in a temp folder."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import ready_store, run_cli, store_uri

FAST = ["trainer.progress=lines"]


def all_runs(client: MlflowClient, experiment: str = "xor"):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} missing"
    return client.search_runs([exp.experiment_id])


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_default_run_logs_everything(tmp_path):
    proc = run_cli("trainer.epochs=6", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainable params: 37" in proc.stdout  # the model summary
    assert "epoch 6/6" in proc.stdout  # plain epoch lines when not a terminal
    client = MlflowClient(store_uri(tmp_path))
    (run,) = all_runs(client)
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["model.name"] == "xor_deep" and params["optim.name"] == "adam"
    assert params["optim.lr"] == "0.015" and params["trainer.batch_size"] == "2"
    assert params["model.layers.0.init.weight"] == "xavier_uniform"
    assert params["trainable_params"] == "37" and "trainable_params" not in run.data.metrics
    assert tags["runner.overrides"] == "trainer.epochs=6 trainer.progress=lines"
    assert tags["runner.device"] == "cpu" and tags["runner.torch"]
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6]
    for key in ("train_loss", "train_total_loss", "val_loss", "train_acc"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 6
    artifacts = artifact_paths(client, run.info.run_id)
    assert {
        "config.yaml",
        "model_summary.txt",
        "hydra/config.yaml",
        "hydra/overrides.yaml",
    } <= artifacts
    assert {
        "plots/learning_curves.png",
        "plots/decision_regions.png",
        "plots/confusion_matrix.png",
    } <= artifacts
    mlflow.set_tracking_uri(store_uri(tmp_path))
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    assert model(torch.zeros(3, 2)).shape == (3, 1)
    # Hydra's job folder holds the log; the store is outside it, under the launch folder.
    assert list((tmp_path / "outputs" / "runs").glob("*/*/runner.log"))


def test_a_run_reads_at_a_glance(tmp_path):
    """True times, a short name, a description, the command as Source, the data set as an
    input, sizes and times as params and tags, thinned console lines, a closing line."""
    proc = run_cli("trainer.epochs=30", "seed=2", "trainer.log_model=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    epoch_lines = [line for line in out.splitlines() if "][runner.epochs][" in line]
    assert 10 <= len(epoch_lines) <= 12 and "epoch 30/30" in epoch_lines[-1]  # not 30
    assert "Creating initial MLflow" not in out and "sqlite:" not in out
    client = MlflowClient(store_uri(tmp_path))
    (run,) = all_runs(client)
    tags = run.data.tags
    closing = out.strip().splitlines()[-1]
    assert " - final: val_loss=" in closing and "val_acc=" in closing and "%" in closing
    page = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}?workflowType="
    assert page in closing and "(after `python -m runner.ui`)" in closing  # no Makefile here
    assert run.info.run_name == "s2 epochs=30 xor_deep adam"
    assert tags["mlflow.source.name"] == "python -m runner trainer.epochs=30 seed=2 " + (
        "trainer.log_model=false"
    )
    assert "**xor_deep** (37 trainable parameters) on **xor**" in tags["mlflow.note.content"]
    # The run starts when the job did, before its first epoch; it lasts the epochs at least.
    first = client.get_metric_history(run.info.run_id, "val_acc")[0]
    assert run.info.start_time <= first.timestamp
    train_s = float(tags["runner.time_train_s"])
    assert 0 < train_s <= (run.info.end_time - run.info.start_time) / 1000
    assert float(tags["runner.time_logging_s"]) >= 0
    assert {"trainable_params", "lr", "time_train_s"}.isdisjoint(run.data.metrics)
    accuracies = [m.value for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert all(repr(v) == repr(round(v, 2)) for v in accuracies)  # k/100, no float32 noise
    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert dataset.name == "xor" and len(dataset.digest) == 8
    assert "x0" in dataset.schema and '"train_rows": 100' in dataset.profile
    assert {(t.key, t.value) for t in dataset_input.tags} == {("mlflow.data.context", "training")}


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["optim.lr=fast"], "optim.lr: 'fast' is not a number"),
        (["model.layers.0.layer=lineer"], "Did you mean 'linear'"),
        (["+model.layers.0.in_features=3"], "contradicts the incoming width 2"),
        (["device=cuda"], "CUDA is not available"),
        (["experiment=house_tiny", "data.target=Prize"], "data.target: unknown column 'Prize'"),
        (
            [
                "experiment=house_tiny",
                "trainer.early_stop.metric=val_r2",
                "trainer.early_stop.patience=3",
            ],
            "trainer.early_stop.metric: 'val_r2' is undefined on the 1 validation row of "
            "data 'house_tiny'",
        ),
    ],
)
def test_bad_input_exits_1_with_one_message_and_no_run(tmp_path, args, fragment):
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 1
    assert fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():
        client = MlflowClient(store_uri(tmp_path))
        assert all(
            r.info.status != "RUNNING"
            for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])
        )


def test_trainer_typo_fails_before_torch_or_mlflow_is_imported(tmp_path):
    env = {"PYTHONPROFILEIMPORTTIME": "1"}  # every import, logged to stderr
    proc = run_cli("trainer.epochs=0", "+trainer.batchsize=2", cwd=tmp_path, env=env)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    message = "\n".join(line for line in lines if not line.startswith("import time:"))
    assert message.startswith("config error: 2 problems:")
    assert "trainer.epochs: 0 is out of range; allowed: >= 1" in message
    assert "Did you mean 'batch_size'" in message
    imported = {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")}
    assert "hydra" in imported  # the import log is there...
    assert not {"torch", "mlflow"} & imported  # ...and holds neither


def test_a_key_the_config_lacks_stops_a_sweep_in_one_line_before_any_job(tmp_path):
    """Hydra's own six lines suggested `+trainer.epoch=3`, after the sweep's parent run had
    started; now one line names the key, before anything is written."""
    proc = run_cli("-m", "trainer.epochs=1,2", "trainer.epoch=3", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "config error: trainer.epoch: unknown key. Did you mean 'epochs'? Allowed: batch_size, "
        "checkpoint_every, data_path, deterministic, early_stop, epochs, grad_clip, keep, "
        "log_model, num_workers, on_nan, plots, progress, threads."
    ]
    assert list(tmp_path.iterdir()) == []  # no sweep folder, no store


def test_a_failure_mid_training_ends_the_run_failed_with_metrics_kept(tmp_path):
    # An absurd learning rate makes the regression loss overflow after a few epochs.
    ready_store(tmp_path)
    proc = run_cli("experiment=house_tiny", "optim=sgd", "optim.lr=1e6", *FAST, cwd=tmp_path)
    assert proc.returncode != 0
    client = MlflowClient(store_uri(tmp_path))
    (run,) = all_runs(client, "house_tiny")
    assert run.info.status == "FAILED"
    assert "loss became" in run.data.tags["error"]
    assert "error/traceback.txt" in artifact_paths(client, run.info.run_id)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 1


def test_mnist_from_idx_files_with_test_metrics(tmp_path, mnist_root):
    ready_store(tmp_path)
    proc = run_cli(
        "experiment=mnist_mlp", f"data.root={mnist_root}", "data.val_size=20",
        "data.download=false", "trainer.epochs=3", "trainer.batch_size=16", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri(tmp_path))
    (run,) = all_runs(client, "mnist")
    metrics = run.data.metrics
    assert {"val_acc", "test_acc", "test_loss"} <= set(metrics)
    assert metrics["val_acc"] > 0.5  # the tiny images are learnable
    assert "plots/confusion_matrix.png" in artifact_paths(client, run.info.run_id)


def test_house_tiny_regression_run_from_any_folder(tmp_path):
    ready_store(tmp_path)
    proc = run_cli("experiment=house_tiny", "trainer.epochs=20", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri(tmp_path))
    (run,) = all_runs(client, "house_tiny")
    assert {"val_rmse", "val_mae", "train_r2"} <= set(run.data.metrics)
    assert "plots/predicted_vs_true.png" in artifact_paths(client, run.info.run_id)
    assert np.isfinite(run.data.metrics["val_rmse"])
    # Its one validation row cannot pick a best epoch: the shipped experiment keeps the last.
    assert "keeping epoch" not in proc.stdout and "runner.kept_epoch" not in run.data.tags


def test_tracking_uri_env_points_runs_elsewhere(tmp_path):
    other = tmp_path / "elsewhere.db"
    proc = run_cli(
        "trainer.epochs=1", "trainer.log_model=false", "trainer.plots=false", *FAST,
        cwd=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{other}"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert other.exists() and not (tmp_path / "outputs" / "mlflow.db").exists()
    assert len(all_runs(MlflowClient(f"sqlite:///{other}"))) == 1


class _NotMlflow(http.server.BaseHTTPRequestHandler):
    """A web server that is not a tracking server: 404 for everything."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_a_tracking_server_that_is_down_or_not_mlflow_fails_at_once_in_one_line(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    web = http.server.HTTPServer(("127.0.0.1", 0), _NotMlflow)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    not_mlflow = f"http://127.0.0.1:{web.server_address[1]}"
    try:
        for uri, why in ((down, "Connection refused"), (not_mlflow, "HTTP 404")):
            # (MLflow's own client would retry for minutes: the timeout guards a hang)
            proc = run_cli(f"tracking.uri={uri}", "trainer.epochs=2", cwd=tmp_path, timeout=60)
            assert proc.returncode == 1
            (line,) = proc.stderr.strip().splitlines()
            assert line.startswith("error: ") and uri in line and why in line, line
            assert "training starts" not in proc.stdout
    finally:
        web.shutdown()
    assert not (tmp_path / "outputs" / "mlflow.db").exists()


def test_early_stopping_keeps_the_best_epochs_weights_for_the_test_plots_and_model(tmp_path):
    ready_store(tmp_path)
    args = ["trainer.epochs=300", "trainer.early_stop.patience=5", "trainer.keep=best"]
    proc = run_cli(*args, "trainer.progress=none", "trainer.plots=false", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri(tmp_path))
    (run,) = all_runs(client)
    assert run.info.status == "FINISHED"
    stopped = int(run.data.tags["runner.stopped_early"])
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert len(history) == stopped < 300
    best_epoch = int(run.data.metrics["best_epoch"])
    by_epoch = {m.step: m.value for m in history}
    assert run.data.metrics["best_val_acc"] == max(by_epoch.values()) == by_epoch[best_epoch]
    assert stopped - best_epoch == 5 and min(by_epoch) == 1
    # The kept weights: checkpoints/best.pt (weights only) is the logged model's, and the
    # closing line reports the best epoch's validation accuracy.
    last = Path(run.data.tags["runner.checkpoint"])
    best = torch.load(last.with_name("best.pt"), weights_only=True)
    assert best["epoch"] == best_epoch and torch.load(last, weights_only=True)["epoch"] == stopped
    mlflow.set_tracking_uri(store_uri(tmp_path))
    model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    assert all(torch.equal(v, best["model"][k]) for k, v in model.state_dict().items())
    assert f"stopped early after epoch {stopped}: val_acc last improved at epoch " in (
        proc.stdout + proc.stderr
    )
    assert f"val_acc={by_epoch[best_epoch]:.2%}" in proc.stdout + proc.stderr
    # A sweep's report reads the same figures as the run's final ones, and its parent run
    # copies them: the kept epoch's.
    from runner.sweep.report import kept_metrics, run_row

    row = run_row(client, run)
    assert row.final_val == by_epoch[best_epoch] and row.best_epoch == best_epoch
    train = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_acc")}
    assert row.final_train == train[best_epoch]
    loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train_loss")}
    copied = kept_metrics(client, run)
    assert copied["val_acc"] == by_epoch[best_epoch] and copied["train_acc"] == train[best_epoch]
    assert copied["train_loss"] == loss[best_epoch] != loss[stopped]
    assert copied["best_epoch"] == best_epoch
    # Its training is over: resume= says so; and without validation rows there is nothing
    # to watch: a config error before training.
    again = run_cli(*args, f"resume={run.info.run_id}", cwd=tmp_path)
    assert again.returncode == 1 and f"stopped early after epoch {stopped}" in again.stderr
    none = run_cli("experiment=auto_mpg_book", "trainer.early_stop.patience=3", cwd=tmp_path)
    assert none.returncode == 1, none.stderr[-2000:]
    assert none.stderr.strip().splitlines()[-1] == (
        "config error: trainer.early_stop.patience: watches a validation metric, and data "
        "'auto_mpg' has no validation rows (hold some out with data.val_size, or drop "
        "trainer.early_stop.patience)"
    )


def test_help_says_what_runner_does_and_its_commands_then_the_groups(tmp_path):
    """`python -m runner --help`: one line on what it does, the commands people use with an
    example each, the config groups, and where the whole config is; Hydra's own help stays
    behind --hydra-help."""
    shown = run_cli("--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert text.startswith("runner: PyTorch experiments written as YAML")
    commands = ["model=", "-m ", "-m hydra/launcher=stacked", ".check", ".report", ".ui", ".new",
                ".predict", ".evaluate"]  # fmt: skip
    for command in commands:
        assert f"python -m runner{'' if command.startswith('.') else ' '}{command}" in text, command
    # Each says what it is for, and the commands start in one column.
    listed = text.split("see the README):\n")[1].split("\n\n")[0].splitlines()
    starts = {line.index("python -m runner") for line in listed}
    assert len(listed) == len(commands) and len(starts) == 1, listed
    assert all(line[: min(starts)].strip() for line in listed), listed
    groups = text.split("== Config groups (group=option) ==")[1]
    assert "model: " in groups and "xor_deep" in groups and "optim: adam" in groups
    assert "python -m runner --cfg job" in groups and "powered by Hydra" not in text
    assert "trainer:" not in text  # the composed config is --cfg job's, not help's
    assert not list(tmp_path.iterdir())  # asking for help writes nothing
    hydra = run_cli("--hydra-help", cwd=tmp_path)
    assert hydra.returncode == 0 and hydra.stdout.startswith("Hydra ("), hydra.stdout[:200]
