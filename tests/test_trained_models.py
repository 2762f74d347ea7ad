"""After training (issue 24): `python -m runner.evaluate` (a trained run's kept weights on
its own test split or on other data, logged as a new run that names its source, nothing
trained), and an image model's predictions, from `runner.predict` and from MLflow's server."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from runner.components.datasets import tabular
from runner.errors import ConfigError
from tests.conftest import ready_store, run_cli, store_uri
from tests.test_tables import served

GRADES = """name: grades
type: csv
num_outputs: 1
path: {path}
target: score
task: regression
columns:
  school: onehot
test_size: 0.25
shuffle: true
standardize_target: true
"""


def grades(path: Path, rows: int, seed: int, schools: tuple[str, ...] = ("north", "south")) -> None:
    """A small regression table with gaps: score = 3*hours - 2*absent (+ a school's bonus)."""
    rng = np.random.default_rng(seed)
    hours = rng.uniform(0, 10, rows)
    absent = rng.integers(0, 5, rows).astype(float)
    school = rng.choice(schools, rows)
    score = 50 + 3 * hours - 2 * absent + np.where(school == "north", 4.0, 0.0)
    hours[rng.random(rows) < 0.1] = np.nan  # imputed with the training rows' mean
    frame = pd.DataFrame({"hours": hours, "absent": absent, "school": school, "score": score})
    frame.to_csv(path, index=False)


DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def evaluate(*args: str, cwd: Path):
    return run_cli(*args, cwd=cwd, module="runner.evaluate")


def predict(*args: str, cwd: Path):
    return run_cli(*args, cwd=cwd, module="runner.predict")


def metrics_of(client: MlflowClient, run_id: str, prefix: str) -> dict[str, float]:
    data = client.get_run(run_id).data.metrics
    return {k.removeprefix(prefix): v for k, v in data.items() if k.startswith(prefix)}


def test_a_table_run_evaluated_on_its_test_split_and_on_another_table(tmp_path, capsys):
    ready_store(tmp_path)
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "grades.yaml").write_text(
        GRADES.format(path=tmp_path / "grades.csv")
    )
    grades(tmp_path / "grades.csv", 160, seed=1)
    trained = run_cli(
        "--config-dir", str(tmp_path / "conf"), "data=grades", "model=mlp", "trainer.epochs=15",
        "trainer.batch_size=16", "trainer.plots=false", "sweep.register=grades", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    client = MlflowClient(store_uri(tmp_path))
    experiment = client.get_experiment_by_name("grades")
    (run,) = client.search_runs([experiment.experiment_id])
    source = run.info.run_id

    # Its own test split, from its run id: the test metrics it logged, nothing trained.
    own = evaluate(source, cwd=tmp_path)
    assert own.returncode == 0, own.stderr[-2000:]
    assert f"run {source} ({run.info.run_name}) on 40 test rows: eval_loss=" in own.stdout
    evaluations = client.search_runs(
        [experiment.experiment_id], "tags.`runner.evaluates` = '" + source + "'"
    )
    (first,) = evaluations
    assert first.info.status == "FINISHED" and first.data.tags["runner.eval_split"] == "test"
    test = metrics_of(client, source, "test_")
    assert metrics_of(client, first.info.run_id, "eval_") == pytest.approx(test, rel=1e-5)
    assert client.get_run(source).data.metrics == run.data.metrics  # the source is untouched

    # Another table through the registered model: every row, encoded with the run's own
    # statistics (an unseen school, gaps), equals what the logged model predicts for them.
    grades(tmp_path / "new.csv", 50, seed=2, schools=("north", "south", "east"))
    other = evaluate("models:/grades@champion", f"data.path={tmp_path / 'new.csv'}", cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-2000:]
    assert "on all 50 rows" in other.stdout, other.stdout
    (second,) = [
        r for r in client.search_runs([experiment.experiment_id], "tags.`runner.evaluates` != ''")
        if r.info.run_id != first.info.run_id
    ]  # fmt: skip
    assert second.data.tags["runner.evaluates"] == source
    assert second.data.params["data.path"] == str(tmp_path / "new.csv")
    rows = pd.read_csv(tmp_path / "new.csv")
    mlflow.set_tracking_uri(store_uri(tmp_path))
    predicted = mlflow.pyfunc.load_model(f"runs:/{source}/model").predict(rows)
    expected = float(np.mean((np.asarray(predicted) - rows["score"].to_numpy()) ** 2))
    assert second.data.metrics["eval_mse"] == pytest.approx(expected, rel=1e-4)

    # Only the data and the device may change: one line, exit 1, no run (in this process:
    # the command line's own wiring ran above).
    from runner.evaluate import main as evaluate_main

    assert evaluate_main(["grades", "optim.lr=3", "--tracking-uri", store_uri(tmp_path)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("config error: optim.lr: evaluate changes only the data"), last
    # An evaluation is no trained run: it names the one it evaluated.
    assert evaluate_main([first.info.run_id, "--tracking-uri", store_uri(tmp_path)]) == 1
    assert f"is an evaluation of run {source}, not a trained run: use {source}" in (
        capsys.readouterr().err
    )
    # A table without the run's columns: its features named, and whose target is which.
    where = ["--tracking-uri", store_uri(tmp_path)]
    assert evaluate_main([source, "data=house_tiny", *where]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "lacks the column(s) " in last and "the target read here: 'Price')" in last, last
    assert len(client.search_runs([experiment.experiment_id])) == 3


def test_an_image_run_is_evaluated_with_the_weights_it_kept_and_predicts_and_serves(
    tmp_path, mnist_root, capsys
):
    ready_store(tmp_path)
    trained = run_cli(
        "experiment=mnist_mlp", f"data.root={mnist_root}", "data.val_size=20",
        "trainer.epochs=3", "trainer.keep=best", "trainer.plots=false", cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    client = MlflowClient(store_uri(tmp_path))
    experiment = client.get_experiment_by_name("mnist")
    (run,) = client.search_runs([experiment.experiment_id])
    # The weights it kept (trainer.keep=best) gave its test metrics; evaluate loads the same.
    own = evaluate("mnist", cwd=tmp_path)
    assert own.returncode == 0, own.stderr[-2000:]
    assert "on 40 test rows" in own.stdout
    other = evaluate(
        run.info.run_id, "data=fashion_mnist", f"data.root={mnist_root}", "data.val_size=20",
        "--split", "test", cwd=tmp_path,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr[-2000:]
    evaluations = {
        r.data.tags["runner.data"]: r
        for r in client.search_runs([experiment.experiment_id], "tags.`runner.evaluates` != ''")
    }
    assert metrics_of(client, evaluations["mnist"].info.run_id, "eval_") == pytest.approx(
        metrics_of(client, run.info.run_id, "test_"), rel=1e-5
    )
    assert evaluations["fashion_mnist"].data.tags["runner.eval_split"] == "test"
    assert {"eval_loss", "eval_acc"} <= evaluations["fashion_mnist"].data.metrics.keys()

    # Predictions for an IDX file and a folder of PNGs: the logged model's, on pixels scaled
    # as the run scaled them, and what MLflow's own server answers for the same tensors.
    images = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    pixels = np.frombuffer(images.read_bytes(), np.uint8, offset=16).reshape(-1, 28, 28)
    (tmp_path / "pngs").mkdir()
    for i in range(3):
        Image.fromarray(pixels[i]).save(tmp_path / "pngs" / f"digit{i}.png")
    from_idx = predict("mnist", "--input", str(images), "--output", "idx.csv", cwd=tmp_path)
    assert from_idx.returncode == 0, from_idx.stderr[-2000:]
    assert "40 images predicted" in from_idx.stdout
    from_png = predict("mnist", "--input", "pngs", "--output", "png.csv", "--proba", cwd=tmp_path)
    assert from_png.returncode == 0, from_png.stderr[-2000:]
    by_index, by_file = pd.read_csv(tmp_path / "idx.csv"), pd.read_csv(tmp_path / "png.csv")
    scaled = ((pixels / 255.0 - 0.1307) / 0.3081).astype(np.float32)[:, None]
    uri = f"runs:/{run.info.run_id}/model"
    mlflow.set_tracking_uri(store_uri(tmp_path))
    logits = np.asarray(mlflow.pyfunc.load_model(uri).predict(scaled))
    names = np.array([f"{d} - {w}" for d, w in enumerate(DIGITS)], dtype=object)
    assert by_index["index"].tolist() == list(range(40))
    assert by_index["prediction"].tolist() == names[logits.argmax(1)].tolist()
    assert by_file["file"].tolist() == ["digit0.png", "digit1.png", "digit2.png"]
    assert by_file["prediction"].tolist() == by_index["prediction"][:3].tolist()
    probabilities = by_file[[f"proba_{name}" for name in names]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    with served(uri, tmp_path) as invoke:
        status, answer = invoke({"inputs": scaled[:5].tolist()})
    assert status == 200, answer
    assert np.asarray(answer["predictions"]).argmax(1).tolist() == logits[:5].argmax(1).tolist()
    from runner.predict import main as predict_main

    labels = str(images.with_name("t10k-labels-idx1-ubyte"))
    where = ["--tracking-uri", store_uri(tmp_path)]
    assert predict_main(["mnist", "--input", labels, "--output", "x.csv", *where]) == 1
    assert "not 28x28 images (a labels file?)" in capsys.readouterr().err


def test_another_table_is_encoded_with_the_trained_runs_statistics(tmp_path):
    frame = pd.DataFrame(
        {"size": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "kind": list("ababab"), "label": list("xyxyxy")}
    )
    frame.to_csv(tmp_path / "train.csv", index=False)
    args = {"path": str(tmp_path / "train.csv"), "target": "label", "task": "binary"}
    fitted = tabular.csv(**args)
    other = pd.DataFrame({"size": [10.0, None], "kind": ["c", "a"], "label": ["y", "x"]})
    other.to_csv(tmp_path / "other.csv", index=False)
    seen = tabular.encoded_as(fitted, **{**args, "path": str(tmp_path / "other.csv")})
    expected = fitted.encoder.transform(other.drop(columns=["label"]))
    assert np.array_equal(seen.x_train.numpy(), expected)  # the training rows' mean and kinds
    assert seen.y_train.tolist() == [1.0, 0.0] and seen.class_names == ["x", "y"]

    other.assign(label=["y", "z"]).to_csv(tmp_path / "unseen.csv", index=False)
    with pytest.raises(ConfigError, match="class 'z' of column 'label' is in 1 row"):
        tabular.encoded_as(fitted, **{**args, "path": str(tmp_path / "unseen.csv")})
    other.drop(columns=["kind"]).to_csv(tmp_path / "narrow.csv", index=False)
    with pytest.raises(ConfigError, match=r"lacks the column\(s\) kind that the trained run"):
        tabular.encoded_as(fitted, **{**args, "path": str(tmp_path / "narrow.csv")})


def test_keeping_the_best_epoch_needs_validation_rows_and_the_default_needs_none():
    """trainer.keep=best without validation rows is a config error before training; the
    default (null) keeps the last epoch's weights there, the best where a run validates."""
    from runner.config.spec import validate
    from runner.job import setup
    from tests.configs import shipped

    cfg = shipped("house_linear", data="house_tiny", epochs=2)
    cfg["data"]["val_size"] = 0
    assert setup(cfg, validate(cfg)).parts.monitor is None  # nothing to watch: the last
    cfg["trainer"]["keep"] = "best"
    with pytest.raises(ConfigError, match="trainer.keep: watches a validation metric, and data"):
        setup(cfg, validate(cfg))
    validating = shipped("xor_deep", epochs=2)
    assert setup(validating, validate(validating)).parts.monitor.keep_best
