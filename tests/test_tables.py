"""Tables as the books treat them: feature columns fitted on the training rows, the book's
Auto MPG split and features, K-fold, clear errors, and a logged model that takes raw rows."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.components.datasets import tabular
from runner.errors import ConfigError
from runner.training.metrics import log_rmse
from tests.conftest import answers, free_port, ready_store, run_cli, store_uri, wait_until
from tests.terminal import Terminal
from tests.test_interrupts import last_line

DATA = Path(__file__).resolve().parents[1] / "data"
AUTO_MPG = DATA / "auto_mpg.csv"
BOOK_COLUMNS = {
    "model_year": {"bucketize": [73, 76, 79]},
    "origin": {"onehot": {"dummy_na": False}},
    "car_name": "drop",
}
NUMERIC = ["cylinders", "displacement", "horsepower", "weight", "acceleration"]


def book_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The book's rows (Raschka ch. 13): dropna, then train_test_split(0.8, random_state=1)."""
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(AUTO_MPG).dropna().reset_index(drop=True)
    return train_test_split(df, train_size=0.8, random_state=1)


def auto_mpg(**kwargs) -> tabular.DataSplits:
    args = dict(target="mpg", columns=BOOK_COLUMNS, drop_missing="any", test_size=0.2)
    return tabular.csv(str(AUTO_MPG), **{**args, "shuffle": True, "seed": 1, **kwargs})


def test_auto_mpg_features_and_split_equal_the_books():
    train, test = book_split()
    data = auto_mpg()
    assert len(data.y_train) == len(train) == 313 and len(data.y_test) == len(test) == 79
    assert torch.equal(data.y_train, torch.tensor(train["mpg"].to_numpy(), dtype=torch.float32))
    assert torch.equal(data.y_test, torch.tensor(test["mpg"].to_numpy(), dtype=torch.float32))
    # The book's features: numeric columns standardized with pandas' std of the training
    # rows, the year bucketized with torch.bucketize(right=True), the origin one-hot.
    stats = train[NUMERIC].describe().transpose()
    for frame, x in ((train, data.x_train), (test, data.x_test)):
        numeric = (frame[NUMERIC] - stats["mean"]) / stats["std"]
        year = torch.bucketize(
            torch.tensor(frame["model_year"].values), torch.tensor([73, 76, 79]), right=True
        )
        origin = torch.nn.functional.one_hot(torch.tensor(frame["origin"].values) - 1, 3)
        expected = torch.cat([torch.tensor(numeric.values), year[:, None], origin], dim=1).float()
        assert torch.allclose(x, expected, atol=1e-5)
    assert data.feature_names == [*NUMERIC, "model_year", "origin_1", "origin_2", "origin_3"]
    assert len(data.x_val) == 0 and data.raw_example.shape == (5, 8)


def test_missing_values_are_filled_after_standardizing_and_unseen_categories_go_to_na(
    tmp_path, caplog
):
    csv = tmp_path / "t.csv"
    csv.write_text("a,color,y\n1,red,1\n3,NA,2\n,red,3\n5,blue,4\n,green,5\n")
    with caplog.at_level(logging.WARNING, logger="runner"):
        data = tabular.csv(str(csv), target="y", val_size=2)
    # Training rows: a = 1, 3, (missing) -> mean 2, std 1.41; colors red, NA.
    assert data.feature_names == ["a", "color_red", "color_nan"]
    std = float(np.std([1, 3], ddof=1))
    assert torch.allclose(data.x_train[:, 0], torch.tensor([-1 / std, 1 / std, 0.0]))
    assert data.x_val.tolist() == [[pytest.approx(3 / std), 0.0, 1.0], [0.0, 0.0, 1.0]]
    assert "2 value(s) unseen in the training rows (e.g. blue, green)" in caplog.text
    state = data.encoder.state()
    assert state["columns"][0]["shift"] == 2.0 and state["features"] == data.feature_names


def test_numeric_transforms(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,c,y\n0,1,10,1\n10,3,20,2\n5,,30,3\n")
    columns = {"a": "minmax", "b": "log1p", "c": "none"}
    data = tabular.csv(str(csv), target="y", columns=columns)
    b = np.log1p([1, 3])
    expected = [[0.0, b[0], 10], [1.0, b[1], 20], [0.5, b.mean(), 30]]
    assert torch.allclose(data.x_train, torch.tensor(expected, dtype=torch.float32))


def test_a_text_column_as_a_bag_of_its_frequent_words(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text(
        "name,y\nVW Rabbit (diesel),1\nvw dasher,2\nford pinto,3\nPeugeot diesel,4\n"
        ",5\nford diesel truck,6\n"
    )
    data = tabular.csv(
        str(csv), target="y", columns={"name": {"words": {"min_count": 2}}}, val_size=1
    )
    # Words in at least 2 of the 5 training rows ("ford" is in one); case folded; a missing
    # name has none; "truck", never seen in training, is ignored.
    assert data.feature_names == ["name:diesel", "name:vw"]
    assert data.x_train.tolist() == [[1, 1], [0, 1], [0, 0], [1, 0], [0, 0]]
    assert data.x_val.tolist() == [[1, 0]]


def test_rows_with_a_missing_target_are_dropped_and_counted(tmp_path, caplog):
    csv = tmp_path / "t.csv"
    csv.write_text("a,y\n1,1\n2,\n,3\n4,4\n")
    with caplog.at_level(logging.INFO, logger="runner"):
        assert len(tabular.csv(str(csv), target="y").y_train) == 3
    assert "dropped 1 of 4 rows with a missing target" in caplog.text
    assert len(tabular.csv(str(csv), target="y", drop_missing="any").y_train) == 2


def test_kfold_validates_each_non_test_row_exactly_once():
    from sklearn.model_selection import KFold

    train, test = book_split()
    seen = []
    for fold in range(5):
        data = auto_mpg(folds=5, fold=fold)
        assert torch.equal(data.y_test, torch.tensor(test["mpg"].values, dtype=torch.float32))
        assert len(data.y_train) + len(data.y_val) == len(train)
        seen.append(data.y_val)
        _, val_idx = list(KFold(5, shuffle=True, random_state=1).split(train))[fold]
        assert torch.equal(
            data.y_val, torch.tensor(train["mpg"].values[val_idx], dtype=torch.float32)
        )
    assert sorted(torch.cat(seen).tolist()) == sorted(train["mpg"].astype("float32").tolist())


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        (
            {"columns": {"horsepowr": "drop"}},
            "data.columns: unknown column 'horsepowr'. Did you mean 'horsepower'",
        ),
        (
            {"columns": {"model_year": {"bucketize": [79, 73]}}},
            "data.columns.model_year.bucketize: [79, 73] is not an increasing",
        ),
        (
            {"columns": {"weight": "standardise"}},
            "unknown column transform 'standardise'. Did you mean 'standardize'",
        ),
        (
            {"columns": {"car_name": "standardize"}},
            "data.columns.car_name: 'standardize' needs numbers",
        ),
        ({"columns": {"mpg": "drop"}}, "data.columns.mpg: 'mpg' is the target"),
        ({"target": "car_name", "columns": {}}, "data.target: column 'car_name' is not numeric"),
        ({"test_size": 1.5}, "data.test_size: 1.5 is neither a fraction in (0, 1) nor a row"),
        ({"val_size": 1.0}, "data.val_size: 1.0 is neither a fraction in (0, 1) nor a row"),
        ({"test_size": 392}, "data.test_size: 392 leaves no training rows out of 392"),
        ({"val_size": 313}, "data.val_size: 313 leaves no training rows out of 313"),
        ({"folds": 5, "fold": 5}, "data.fold: 5 is out of range; allowed: 0 to 4"),
        ({"folds": 3, "val_size": 0.1}, "give either val_size or folds"),
        ({"columns": {"model_year": "bucketize"}}, "bucketize needs its boundaries"),
        ({"columns": {"car_name": {"words": {"min": 2}}}}, "is not a mapping like {min_count: 2}"),
    ],
)
def test_table_errors_name_the_key_and_the_column(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        auto_mpg(**kwargs)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "size", [0.2, 0.5, 0.95, 0.999, 1, 3, 9, 10, 1.0, 1.5, 2.0, 9.0, -1, -0.2, float("nan")]
)
def test_split_sizes_follow_scikit_learns_rules(size):
    """A size train_test_split refuses is refused, naming the key; one it takes gives its
    test rows (0, which scikit-learn refuses, means no test split here)."""
    from sklearn.model_selection import train_test_split

    try:
        expected = train_test_split(np.arange(10), test_size=size, random_state=1)[1]
    except (ValueError, TypeError):  # a nan size
        expected = None
    if expected is None:
        with pytest.raises(ConfigError, match="data.test_size: "):
            tabular.split_rows(10, size, 0, 0, 0, shuffle=True, seed=1)
    else:
        _, _, test = tabular.split_rows(10, size, 0, 0, 0, shuffle=True, seed=1)
        assert sorted(test) == sorted(expected)


def test_split_sizes_fail_validation_before_the_table_is_read():
    from runner.config.spec import validate
    from tests.configs import shipped

    cfg = shipped("auto_mpg_book", data="auto_mpg")
    cfg["data"] |= {"test_size": 1.5, "val_size": -0.5, "path": "/nowhere.csv"}
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert sorted(err.value.problems) == [  # each once
        "data.test_size: 1.5 is neither a fraction in (0, 1) nor a row count; allowed: a "
        "fraction strictly between 0 and 1, or a whole number of rows (0: none)",
        "data.val_size: -0.5 is out of range; allowed: >= 0",
    ]
    cfg["data"] |= {"test_size": 0.2, "val_size": 10}
    assert validate(cfg).data.args["val_size"] == 10


def test_no_features_left_and_an_empty_column_are_refused(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n1,,1\n2,,2\n")
    with pytest.raises(ConfigError, match="data.columns.b: column 'b' is entirely missing"):
        tabular.csv(str(csv), target="y")
    with pytest.raises(ConfigError, match="no feature column is left"):
        tabular.csv(str(csv), target="y", columns={"a": "drop", "b": "drop"})


def test_log_rmse_is_d2ls():
    pred, true = torch.tensor([0.5, 100.0, 1000.0]), torch.tensor([2.0, 110.0, 900.0])
    expected = np.sqrt(np.mean((np.log([1.0, 100.0, 1000.0]) - np.log([2.0, 110.0, 900.0])) ** 2))
    assert log_rmse(pred, true) == pytest.approx(expected, rel=1e-6)


def test_auto_mpg_book_run_logs_test_metrics_and_a_model_for_raw_rows(tmp_path):
    ready_store(tmp_path)
    proc = run_cli(
        "experiment=auto_mpg_book", "trainer.epochs=20", "trainer.progress=lines",
        "trainer.plots=false", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("auto_mpg").experiment_id])
    metrics = run.data.metrics
    assert {"test_mse", "test_mae", "train_mse"} <= set(metrics) and "val_mse" not in metrics
    assert run.data.params["trainable_params"] == "121"  # 9 features -> 8 -> 4 -> 1
    encoder = client.download_artifacts(run.info.run_id, "data/encoder.json")
    assert '"model_year"' in Path(encoder).read_text()
    # The logged model takes the raw test rows (names, NaN-free raw units) and predicts mpg.
    mlflow.set_tracking_uri(store_uri(tmp_path))
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    _, test = book_split()
    pred = np.asarray(model.predict(test.drop(columns=["mpg"])), dtype=np.float64)
    mse = float(np.mean((pred - test["mpg"].to_numpy()) ** 2))
    assert mse == pytest.approx(metrics["test_mse"], rel=1e-4)

    # Its signature asks for the columns the encoder reads (not the dropped car name), and
    # takes what the encoder takes: a gap in an integer column is imputed with the training
    # mean, integers stand for doubles; text in a numeric column or a missing column is a
    # clear refusal. MLflow's warning about integer columns is gone with the inferred types.
    inputs = model.metadata.get_input_schema()
    assert inputs.input_names() == [*NUMERIC, "model_year", "origin"]
    assert "Integer columns" not in proc.stderr, proc.stderr[-3000:]
    rows = test.drop(columns=["mpg"]).head(3).reset_index(drop=True)
    fill = next(c["fill"] for c in json.loads(Path(encoder).read_text())["columns"]
                if c["name"] == "cylinders")  # fmt: skip
    gap, filled = rows.astype({"cylinders": float}), rows.astype({"cylinders": float})
    gap.loc[0, "cylinders"], filled.loc[0, "cylinders"] = np.nan, fill
    expected = model.predict(filled)
    assert model.predict(gap).tolist() == expected.tolist()
    assert model.predict(rows.astype({"displacement": int})).shape == (3,)
    with pytest.raises(MlflowException, match="column 'cylinders' holds text such as 'eight'"):
        model.predict(rows.assign(cylinders=["eight", 4, 4]))
    with pytest.raises(MlflowException, match=r"missing inputs \['weight'\]"):
        model.predict(rows.drop(columns=["weight"]))

    # The same answers from `mlflow models serve`: JSON rows with a null, and a 400 for text.
    with served(f"runs:/{run.info.run_id}/model", tmp_path) as invoke:
        status, body = invoke(gap)
        assert status == 200 and body["predictions"] == pytest.approx(expected.tolist()), body
        status, body = invoke(rows.assign(cylinders=["eight", 4, 4]))
        assert status == 400 and "holds text such as 'eight'" in body["message"], body

    # python -m runner.predict on a raw CSV (the experiment's name names its best run, the
    # only one): the pyfunc model's numbers, the input's columns kept, its mpg ignored.
    new_cars = tmp_path / "new_cars.csv"
    gap.assign(mpg=0.0).to_csv(new_cars, index=False)
    done = subprocess.run(
        [sys.executable, "-m", "runner.predict", "auto_mpg", "--input", str(new_cars),
         "--output", "predicted.csv", "--chunk-rows", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "predicted.csv")
    assert list(table.columns) == [*rows.columns, "mpg", "prediction"]
    assert table["prediction"].to_numpy() == pytest.approx(expected, rel=1e-6)
    # Mistakes, one line each (the command in this process): a name that names nothing, a
    # table without a column the model reads, probabilities of a regression.
    for argv, line in [
        (["auto_mgp"], "'auto_mgp' is neither a run id, an experiment nor a models:/ URI. "
                       "Did you mean 'auto_mpg'?"),
        ([run.info.run_id, "--proba"], "error: --proba: the model predicts numbers"),
    ]:  # fmt: skip
        code, text = predict_main(tmp_path, [*argv, "--input", str(new_cars)])
        assert code == 1 and line in text, text
    new_cars.write_text("cylinders,horsepower\n4,90\n")
    code, text = predict_main(tmp_path, ["auto_mpg", "--input", str(new_cars)])
    assert code == 1 and "lacks the column(s) displacement, weight, acceleration" in text
    for name, content in [("latin.csv", "cylinders\n\xe9\n".encode("latin-1")), ("empty.csv", b"")]:
        (tmp_path / name).write_bytes(content)
        code, text = predict_main(tmp_path, ["auto_mpg", "--input", str(tmp_path / name)])
        assert code == 1 and "cannot be read as a table with the run's data.read" in text, text
    from runner import predict

    nowhere = str(tmp_path / "missing" / "out.csv")
    assert predict.main(["auto_mpg", "--input", str(new_cars), "--output", nowhere]) == 1
    assert not (tmp_path / "out.csv").exists()

    # A terminal's Ctrl-C mid-way (to the whole group): one line, exit 130, no output file,
    # not even the partial one.
    pd.concat([rows] * 100_000).to_csv(new_cars, index=False)
    term = Terminal(
        [sys.executable, "-m", "runner.predict", "auto_mpg", "--input", str(new_cars),
         "--output", "cut.csv", "--chunk-rows", "1000"],
        tmp_path, dict(os.environ),
    )  # fmt: skip
    try:
        wait_until(lambda: (tmp_path / "cut.csv.partial").exists(), "predictions being written")
        term.ctrl_c()
        assert term.wait_exit(60) == 130, term.text[-3000:]
    finally:
        term.close()
    assert "Traceback" not in term.text, term.text[-3000:]
    assert last_line(term.text).endswith("interrupted: no predictions written")  # (after ^C)
    assert not list(tmp_path.glob("cut.csv*"))


def predict_main(cwd: Path, argv: list[str]) -> tuple[int, str]:
    """`python -m runner.predict ARGV --output out.csv` in this process, run in `cwd`:
    its exit status and the last line it printed to stderr."""
    from runner import predict

    err = io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stderr(err):
        code = predict.main([*argv, "--output", "out.csv"])
    return code, err.getvalue().strip().splitlines()[-1]


@contextlib.contextmanager
def served(model_uri: str, cwd: Path) -> Iterator[Callable[[Any], tuple[int, dict]]]:
    """`mlflow models serve` on a logged model, as the README shows it (the runner's own
    environment); yields a function that posts rows (or a JSON payload as it is, e.g. a
    tensor model's `inputs`) and returns the status and the answer. The server is stopped on
    the way out."""
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri(cwd)}
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    server = subprocess.Popen(
        [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", model_uri,
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip

    def invoke(rows: pd.DataFrame | dict) -> tuple[int, dict]:
        payload = rows
        if isinstance(rows, pd.DataFrame):
            payload = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/ping"), "the model server", 120,
                   0.5, proc=server)  # fmt: skip
        yield invoke
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.communicate(timeout=60)


def write_raw_table(path: Path, rows: int = 442) -> None:
    """A medical-style table in raw units: ten numeric columns (four with gaps), two
    nominal ones with missing values, a target linear in them plus noise."""
    rng = np.random.default_rng(7)
    numeric = {
        "age_years": rng.uniform(20, 80, rows),
        "income_usd": rng.lognormal(11, 0.5, rows),
        "cholesterol_mg": rng.normal(200, 40, rows),
        "weight_klb": rng.normal(0.18, 0.03, rows),
        "bmi": rng.normal(27, 4, rows),
        "bp_mmhg": rng.normal(95, 14, rows),
        "s1": rng.normal(190, 35, rows),
        "s2": rng.normal(115, 30, rows),
        "s3": rng.normal(50, 13, rows),
        "glucose_mg": rng.normal(90, 11, rows),
    }
    z = {k: (v - v.mean()) / v.std() for k, v in numeric.items()}
    sex = rng.choice(["F", "M"], rows)
    region = rng.choice(["north", "south", "east", "west"], rows)
    target = 150 + 20 * z["bmi"] + 12 * z["bp_mmhg"] + 8 * z["age_years"] - 6 * z["s3"]
    target += 5 * z["income_usd"] + 10 * (sex == "M") + np.where(region == "south", 15, 0)
    frame = pd.DataFrame({**numeric, "sex": sex, "region": region})
    frame["progression"] = target + rng.normal(0, 20, rows)
    for column in ("income_usd", "cholesterol_mg", "s2", "glucose_mg"):
        frame.loc[rng.random(rows) < 0.05, column] = np.nan
    for column in ("sex", "region"):
        frame.loc[rng.random(rows) < 0.05, column] = np.nan
    frame.to_csv(path, index=False)


def test_a_new_raw_table_trains_from_a_copied_yaml_like_linear_regression(tmp_path):
    ready_store(tmp_path)
    from omegaconf import OmegaConf
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from runner.config.project import CONF_DIR

    table = tmp_path / "medical.csv"
    write_raw_table(table)
    # A user copies house_tiny.yaml and edits it for their table.
    data = OmegaConf.load(CONF_DIR / "data" / "house_tiny.yaml")
    data.name, data.path, data.target = "medical", str(table), "progression"
    data.columns = {"sex": "onehot", "region": "onehot"}
    data.val_size, data.shuffle = 0.2, True
    (tmp_path / "conf" / "data").mkdir(parents=True)
    OmegaConf.save(data, tmp_path / "conf" / "data" / "medical.yaml")
    proc = run_cli(
        "--config-dir", str(tmp_path / "conf"), "data=medical", "model=house_linear",
        "optim=sgd", "optim.lr=0.01", "trainer.epochs=60", "trainer.batch_size=8",
        "trainer.progress=lines", "trainer.plots=false", "trainer.log_model=false", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("medical").experiment_id])
    assert run.info.status == "FINISHED"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # scikit-learn's own pipeline on the same rows: standardize + mean-impute, one-hot.
    frame = pd.read_csv(table)
    train, val, _ = tabular.split_rows(len(frame), 0, 0.2, 0, 0, shuffle=True, seed=1)
    x, y = frame.drop(columns=["progression"]), frame["progression"]
    text = ["sex", "region"]
    numeric = [c for c in x.columns if c not in text]
    pipeline = make_pipeline(
        make_column_transformer(
            (make_pipeline(StandardScaler(), SimpleImputer()), numeric),
            (OneHotEncoder(handle_unknown="ignore"), text),
        ),
        LinearRegression(),
    )
    pipeline.fit(x.iloc[train], y.iloc[train])
    sklearn_r2 = r2_score(y.iloc[val], pipeline.predict(x.iloc[val]))
    assert sklearn_r2 > 0.5  # the table is learnable
    assert abs(run.data.metrics["val_r2"] - sklearn_r2) <= 0.05
