"""The first look at a raw table (issue 21): dates as features, files that are not
comma-separated UTF-8, and the cells and columns that break the numbers (infinities, huge
values, ids, numbers read as text, repeated names), each refused or warned in one line."""

from __future__ import annotations

import gzip
import json
import logging
import math
import subprocess
import sys
import tracemalloc
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import initialize_config_dir
from mlflow.tracking import MlflowClient

from runner.check import CONF_DIR, job_problems
from runner.components.datasets import tabular
from runner.components.datasets.table_checks import check_encoded_size
from runner.errors import ConfigError
from runner.tracking import plots
from runner.training.memory import available_host_memory
from scripts.daily_table import daily_table
from tests.conftest import ready_store, run_cli, store_uri


def table(tmp_path: Path, text: str, name: str = "t.csv") -> str:
    """Write a small table file and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# --- dates -------------------------------------------------------------------------------


def test_a_date_column_becomes_a_standardized_year_and_sin_cos_cycles(tmp_path):
    path = table(
        tmp_path,
        "day,y\n2021-01-01,1\n2021-07-02 12:00,2\n,3\n2022-04-01,4\n2023-12-31 18:00,5\n",
    )
    parts = ["year", "month", "dayofweek", "dayofyear", "hour"]
    data = tabular.csv(path, target="y", columns={"day": {"date": parts}}, val_size=1)
    assert data.feature_names == [
        "day_year", "day_month_sin", "day_month_cos", "day_dayofweek_sin",
        "day_dayofweek_cos", "day_dayofyear_sin", "day_dayofyear_cos", "day_hour_sin",
        "day_hour_cos",
    ]  # fmt: skip
    x = data.x_train.numpy()
    years = np.array([2021, 2021, 2022])  # the gap does not count
    assert x[[0, 1, 3], 0] == pytest.approx((years - years.mean()) / years.std(ddof=1), abs=1e-6)
    # 1 January: month and day of the year at angle 0; a Friday (dayofweek 4 of 7); midnight.
    friday = [np.sin(2 * np.pi * 4 / 7), np.cos(2 * np.pi * 4 / 7)]
    assert x[0, 1:] == pytest.approx([0, 1, *friday, 0, 1, 0, 1], abs=1e-6)
    assert x[1, 7:] == pytest.approx([0, -1], abs=1e-6)  # 12:00, half way round the day
    assert (x[2] == 0).all()  # a gap: the mean year, no position in any cycle
    # The logged model's encoder takes raw date strings, with the training rows' statistics.
    raw = data.encoder.transform(pd.DataFrame({"day": ["2023-12-31 18:00"]}))
    assert raw == pytest.approx(data.x_val.numpy(), abs=1e-6)
    assert raw[0, 7:] == pytest.approx([-1, 0], abs=1e-6)  # 18:00: three quarters round
    state = json.loads(json.dumps(data.encoder.state(), allow_nan=False))
    assert state["columns"][0]["parts"] == parts and state["columns"][0]["date_format"]


def test_day_first_dates_are_read_day_first_when_only_that_reads_them_all(tmp_path):
    path = table(tmp_path, "day,y\n03/04/2021,1\n13/04/2021,2\n25/12/2022,3\n")
    data = tabular.csv(path, target="y", columns={"day": {"date": ["month"]}})
    assert data.encoder.columns[0].date_format == "%d/%m/%Y"
    april = [np.sin(2 * np.pi * 3 / 12), np.cos(2 * np.pi * 3 / 12)]
    assert data.x_train[0].tolist() == pytest.approx(april, abs=1e-6)  # 3 April, not 4 March
    new = data.encoder.transform(pd.DataFrame({"day": ["01/02/2023"]}))  # 1 February
    assert new[0] == pytest.approx([np.sin(2 * np.pi / 12), np.cos(2 * np.pi / 12)], abs=1e-6)


@pytest.mark.parametrize(
    "text,spec,fragment",
    [
        ("day,y\n2021-01-01,1\nnot a date,2\n2021-01-03,3\n", {"date": ["year"]},
         "data.columns.day.date: 'not a date' in column 'day' is not a date"),
        ("day,y\n2021-01-01,1\n2021-01-02,2\n", {"date": ["yaer"]},
         "unknown date part 'yaer'. Did you mean 'year'?"),
        ("day,y\n2021-01-01,1\n2021-01-02,2\n", "date", "date needs its parts, e.g. {date: ["),
        ("day,y\n2021-01-01,1\n2021-01-02,2\n", {"date": []}, "is not a list of date parts"),
        ("day,y\n20210101,1\n20210102,2\n", {"date": ["year"]},
         "holds numbers (20210101), not dates"),
    ],
)  # fmt: skip
def test_date_mistakes_name_the_column_and_the_value(tmp_path, text, spec, fragment):
    with pytest.raises(ConfigError) as err:
        tabular.csv(table(tmp_path, text), target="y", columns={"day": spec})
    assert fragment in str(err.value)


def test_the_daily_table_warns_about_its_date_and_gains_from_year_and_day_of_year(tmp_path, caplog):
    """The issue's daily table, smaller: copied into a data YAML without listing columns,
    its date is one-hot and memorized (with a warning); year and day of the year lift a plain
    logistic regression by more than ten points (scripts/daily_table.py: 0.527 -> 0.727 on
    1,500 days)."""
    from sklearn.linear_model import LogisticRegression

    path = tmp_path / "daily.csv"
    daily_table(days=900, seed=0).to_csv(path, index=False)
    common = {"target": "demand", "task": "multiclass", "val_size": 0.2, "shuffle": True}
    with caplog.at_level(logging.WARNING, logger="runner"):
        tabular.csv(str(path), **common)
    (memorized,) = [w for w in warnings(caplog) if "distinct values" in w]
    assert "column 'day' has 720 distinct values in 720 training rows" in memorized
    assert "(its values look like dates)" in memorized
    assert "day: drop" in memorized and "{words:" in memorized and "{date: [" in memorized

    def accuracy(day: object) -> float:
        data = tabular.csv(str(path), **common, columns={"day": day})
        model = LogisticRegression(max_iter=2000).fit(data.x_train, data.y_train)
        return model.score(data.x_val, data.y_val)

    assert accuracy({"date": ["year", "dayofyear"]}) - accuracy("drop") > 0.10


# --- reading files -----------------------------------------------------------------------


def test_tsv_parquet_gzip_and_a_european_csv_read_alike(tmp_path):
    frame = pd.DataFrame({"mpg": [18.5, 15.0, 16.25], "cyl": [8, 6, 4]})
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    frame.to_parquet(tmp_path / "t.parquet")
    with gzip.open(tmp_path / "t.csv.gz", "wt") as out:
        frame.to_csv(out, index=False)
    frame.to_csv(tmp_path / "eu.csv", sep=";", decimal=",", index=False, encoding="latin-1")
    reads = {"t.tsv": None, "t.parquet": None, "t.csv.gz": None,
             "eu.csv": {"sep": ";", "decimal": ",", "encoding": "latin-1"}}  # fmt: skip
    for name, read in reads.items():
        data = tabular.csv(str(tmp_path / name), target="mpg", read=read)
        assert data.y_train.tolist() == [18.5, 15.0, 16.25], name
        assert data.feature_names == ["cyl"]


@pytest.mark.parametrize(
    "text,read,fragment",
    [
        ("mpg;cyl\n18,5;8\n15;6\n", None,
         "data.read.sep: the header of {path} is one column, 'mpg;cyl', holding ';': set "
         "`read: {{sep: ';'}}` in the data config (and decimal: ','"),
        ("mpg\tcyl\n18\t8\n", None, "holding '\\t': set `read: {{sep: '\\t'}}`"),
        ("mpg|cyl\n18|8\n", None, "holding '|': set `read: {{sep: '|'}}`"),
        ("mpg;cyl\n18,5;8\n15;6\n", {"sep": ";"},
         "column 'mpg' is not numeric (it holds '18,5'); a regression target must be numbers, "
         "or set data.task: binary or multiclass; numbers written 18,5 need data.read.decimal"),
        ("mpg,cyl\n1,2\n", {"sepp": ";"},
         "data.read.sepp: pandas.read_csv (the reader of a .csv file) has no option 'sepp'. "
         "Did you mean 'sep'?"),
        ("mpg,cyl\n1,2\n", {"chunksize": 10}, "data.read.chunksize: not allowed here"),
        ("mpg,cyl\n1,2\n", {"nrows": "x"}, "data.read: pandas.read_csv could not read {path}"),
        ("", None, "data.path: {path} is empty (no header, no rows)"),
        ("mpg,cyl\n", None, "data.path: {path} has a header (mpg, cyl) but no rows"),
        ("mpg,cyl,cyl\n1,2,3\n2,3,4\n", None,
         "data.path: {path} repeats the column name(s) 'cyl'; rename them"),
    ],
)  # fmt: skip
def test_a_file_that_cannot_be_read_as_given_says_which_option_fixes_it(
    tmp_path, text, read, fragment
):
    path = table(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        tabular.csv(path, target="mpg", read=read)
    assert fragment.format(path=repr(path)) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_file_that_is_not_utf8_names_the_encoding_option(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("name,y\nMünchen,1\nKöln,2\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"data.read.encoding: .* is not utf-8 text"):
        tabular.csv(str(path), target="y")
    data = tabular.csv(str(path), target="y", read={"encoding": "latin-1"})
    assert data.feature_names == ["name_Köln", "name_München", "name_nan"]


def test_real_columns_named_like_pandas_repeats_are_kept(tmp_path):
    data = tabular.csv(table(tmp_path, "a,a.1,y\n1,2,1\n2,4,2\n3,5,3\n"), target="y")
    assert data.feature_names == ["a", "a.1"]


# --- cells and columns that break the numbers ----------------------------------------------


def test_infinities_are_gaps_named_with_their_row_count(tmp_path, caplog):
    """inf in a validation row made every val metric nan; in a training row, the loss nan
    and encoder.json invalid. Now they are gaps, said once per column."""
    path = table(tmp_path, "a,b,y\ninf,1,1\n2,-inf,2\n3,inf,3\n4,4,inf\n5,5,5\n-inf,6,6\n")
    with caplog.at_level(logging.WARNING, logger="runner"):
        data = tabular.csv(path, target="y", val_size=1, drop_missing="target")
    said = warnings(caplog)
    assert "data: column 'a' holds inf or -inf in 2 row(s); they are treated as missing " in said[0]
    assert "column 'b' holds inf or -inf in 2 row(s)" in said[1]
    assert "column 'y' holds inf or -inf in 1 row(s)" in said[2]
    assert len(data.y_train) + len(data.y_val) == 5  # the row without a target is dropped
    assert torch.isfinite(data.x_train).all() and torch.isfinite(data.x_val).all()
    assert data.x_val[0, 0] == 0  # the validation row's -inf: the training mean
    json.dumps(data.encoder.state(), allow_nan=False)  # valid JSON: no NaN, no Infinity
    # New rows for the logged model: an infinite cell is a gap there too.
    new = data.encoder.transform(pd.DataFrame({"a": [np.inf], "b": [1.0]}))
    assert np.isfinite(new).all() and new[0, 0] == 0


def test_huge_values_standardize_and_float32_limits_are_named(tmp_path, caplog):
    huge = table(tmp_path, "a,y\n1e200,1\n2e200,2\n3e200,3\n4e200,4\n")
    data = tabular.csv(huge, target="y")
    assert data.x_train[:, 0].tolist() == pytest.approx(
        [-1.161895, -0.387298, 0.387298, 1.161895], rel=1e-5
    )
    assert math.isfinite(data.encoder.state()["columns"][0]["scale"])
    with pytest.raises(
        ConfigError,
        match=r"data.columns.a: encoded with 'none', column 'a' reaches 4e\+200, beyond float32",
    ):
        tabular.csv(huge, target="y", numeric="none")
    big_target = table(tmp_path, "a,y\n1,1e300\n2,2e300\n3,5\n", "big.csv")
    with pytest.raises(
        ConfigError, match=r"data.target: column 'y' reaches 2e\+300, beyond float32's"
    ):
        tabular.csv(big_target, target="y")
    large = table(tmp_path, "a,y\n1,1e25\n2,2e25\n3,3e25\n", "large.csv")
    with caplog.at_level(logging.WARNING, logger="runner"):
        tabular.csv(large, target="y")
        standardized = tabular.csv(large, target="y", standardize_target=True)
    assert any(
        "whose square overflows float32" in w and "standardize_target" in w
        for w in warnings(caplog)
    )
    assert standardized.y_train.tolist() == pytest.approx([-1.224745, 0.0, 1.224745], rel=1e-5)
    assert standardized.target_std == pytest.approx(8.16497e24, rel=1e-5)


def test_an_encoded_table_too_large_for_memory_is_refused_naming_the_column(tmp_path):
    available = available_host_memory()
    if available is None:
        pytest.skip("this system does not say how much memory is available")
    # An id column with one level per row: rows x rows float32 exceeds the memory available.
    rows = int(math.sqrt(available / 4)) + 1000
    frame = pd.DataFrame({"id": [f"u{i}" for i in range(rows)], "y": np.arange(rows) % 7})
    frame.to_csv(tmp_path / "ids.csv", index=False)
    with pytest.raises(ConfigError) as err:
        tabular.csv(str(tmp_path / "ids.csv"), target="y", columns={"id": "onehot"})
    message = str(err.value)
    assert message.startswith(f"data.columns.id: column 'id' has {rows:,} levels")
    assert f"{rows:,} rows x {rows + 1:,} features" in message  # and the column for gaps
    assert "GiB of float32, more than half of the" in message and "id: drop" in message
    # The case: 50,000 levels on 200,000 rows, 37.3 GiB, on a machine with 16 GiB free.
    column = tabular.Column("id", "onehot", categories=list(range(50_000)))
    with pytest.raises(
        ConfigError, match=r"50,000 levels .* 200,000 rows x 50,001 features would take 37.3 GiB"
    ):
        check_encoded_size([column], 200_000, 16 * 2**30)
    check_encoded_size([column], 200_000, 80 * 2**30)  # fits in half of 80 GiB


def test_encoding_writes_one_float32_array_and_no_second_copy():
    rows, levels = 20_000, 500
    frame = pd.DataFrame({"c": [f"v{i % levels}" for i in range(rows)], "n": np.arange(rows) * 1.0})
    encoder = tabular.TabularEncoder(
        [tabular.Column("c", "onehot"), tabular.Column("n", "standardize")]
    )
    encoder.fit(frame)
    size = rows * (levels + 2) * 4  # 40 MB
    tracemalloc.start()
    try:
        out = encoder.transform(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.nbytes == size and out.dtype == np.float32
    assert peak < 1.1 * size  # the output itself, plus a few per-column arrays


def test_numbers_read_as_text_warn_with_the_share_and_the_read_option(tmp_path, caplog):
    hp = ",".join(["hp", *[str(90 + i) for i in range(17)], "?", "?", "unknown"])
    path = table(tmp_path, "hp,price,eu,y\n" + "\n".join(
        f"{h},\"{1 + i},{100 + i}\",\"{i},5\",{i}" for i, h in enumerate(hp.split(",")[1:])
    ) + "\n")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="runner"):
        tabular.csv(path, target="y")
    said = {w.split(":")[0][len("data.columns.") :]: w for w in warnings(caplog)}
    assert len(said) == len(warnings(caplog)) == 3  # one each, none about distinct values
    assert "85% of its cells are numbers (the others: '?', 'unknown')" in said["hp"]
    assert "data.read.na_values: ['?', 'unknown'] reads such cells as gaps" in said["hp"]
    assert "100% of its cells" in said["price"] and "data.read.thousands: ','" in said["price"]
    assert "data.read.decimal: ','" in said["eu"] and "thousands" not in said["eu"]
    fixed = tabular.csv(path, target="y", columns={"price": "drop", "eu": "drop"},
                        read={"na_values": ["?", "unknown"]})  # fmt: skip
    assert fixed.feature_names == ["hp"] and torch.isfinite(fixed.x_train).all()
    with pytest.raises(
        ConfigError,
        match=r"text such as '\?'; if it marks a missing value set data.read.na_values: \['\?'\]",
    ):
        tabular.csv(path, target="y", columns={"hp": "standardize"})


def test_no_warning_for_ordinary_categories(tmp_path, caplog):
    rows = "\n".join(f"{c},{i % 3},{i}" for i, c in enumerate(["red", "blue", "green"] * 10))
    with caplog.at_level(logging.WARNING, logger="runner"):
        tabular.csv(table(tmp_path, f"colour,n,y\n{rows}\n"), target="y")
    assert warnings(caplog) == []


def test_repeated_names_and_colliding_features_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="repeats the column name"):
        tabular.csv(table(tmp_path, "a,a,y\n1,2,1\n2,3,2\n"), target="y", columns={"a": "drop"})
    collide = table(tmp_path, "cat,cat_x,y\nx,1,1\nz,2,2\nx,3,3\n", "c.csv")
    with pytest.raises(ConfigError) as err:
        tabular.csv(collide, target="y")
    assert str(err.value) == (
        "data.columns.cat_x: feature 'cat_x' comes from both column 'cat' (onehot) and column "
        "'cat_x' (standardize); rename one of them in the file's header, or drop one"
    )


def test_a_dotted_column_is_addressed_by_nested_keys(tmp_path):
    path = table(tmp_path, "price.usd,b,y\n1,2,1\n2,3,2\n3,4,3\n")
    # `++data.columns.price.usd=drop` composes to {price: {usd: drop}}.
    assert tabular.csv(path, target="y", columns={"price": {"usd": "drop"}}).feature_names == ["b"]
    # Listed in the YAML, then replaced on the command line: the later entry wins.
    both = {"price.usd": "standardize", "price": {"usd": "drop"}}
    assert tabular.csv(path, target="y", columns=both).feature_names == ["b"]
    with pytest.raises(
        ConfigError, match="data.columns.price.usd: unknown column transform 'dorp'"
    ):
        tabular.csv(path, target="y", columns={"price": {"usd": "dorp"}})


# --- messages that misled -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text,kwargs,message",
    [
        ("a,y\n1,no\n2,no\n3,no\n4,yes\n", {"task": "binary", "val_size": 1},
         "data.task: 'binary' needs 2 classes in the training rows of column 'y', found only "
         "['no']; other rows hold ['yes']: set data.shuffle: true to mix them in"),
        ("a,y\n1,no\n2,no\n3,no\n", {"task": "binary"},
         "data.task: 'binary' needs 2 classes in the training rows of column 'y', found only "
         "['no']; a target needs at least two classes"),
        ("a,y\n1,no\n2,yes\n3,maybe\n", {"task": "binary"},
         "data.task: 'binary' needs 2 classes in the training rows of column 'y', found 3: "
         "['maybe', 'no', 'yes']; set data.task: multiclass"),
        ("a,y\n1,no\n2,yes\n3,no\n4,maybe\n5,maybe\n", {"task": "multiclass", "val_size": 2},
         "data.target: class 'maybe' of column 'y' is in 2 validation row(s) but in no training "
         "row (2 validation row(s) hold unseen classes): the network cannot predict it; set "
         "data.shuffle: true (rows in file order keep it out of training), or drop those rows"),
        ("a,y\n1,no\n2,yes\n3,no\n4,maybe\n", {"task": "multiclass", "test_size": 1},
         "data.target: class 'maybe' of column 'y' is in 1 test row(s) but in no training row"),
        ("a,y\n1,no\n2,yes\n", {"task": "binary", "categorical": ["y"]},
         "data.categorical: 'y' is the target, not a feature; a target's classes come from "
         "data.task: binary or multiclass"),
    ],
)  # fmt: skip
def test_target_messages_say_where_the_classes_are(tmp_path, text, kwargs, message):
    with pytest.raises(ConfigError) as err:
        tabular.csv(table(tmp_path, text), target="y", **kwargs)
    assert str(err.value).startswith(message)


def test_a_true_false_target_is_predicted_as_booleans(tmp_path):
    path = table(tmp_path, "a,y\n1,True\n2,False\n3,True\n4,False\n")
    data = tabular.csv(path, target="y", task="binary")
    assert data.class_names == ["False", "True"]
    assert data.encoder.state()["target_classes"] == [False, True]
    model = torch.nn.Sequential(torch.nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(10.0), model[0].bias.fill_(0.0)  # positive a: True
    predictor = tabular.TabularPredictor(
        data.encoder, model, "binary", "value", class_names=data.class_names
    )
    pred = predictor.predict(pd.DataFrame({"a": [4.0, 1.0]}))
    assert pred.tolist() == [True, False] and pred.dtype == np.bool_


# --- pictures and the check -----------------------------------------------------------------


def test_a_picture_that_cannot_be_drawn_is_skipped_with_a_warning(caplog):
    history = [{"train_loss": 1.0, "val_loss": np.inf, "train_rmse": 1.0, "val_rmse": np.nan}]
    regression = {"y_true": np.array([1.0, 2.0]), "y_pred": np.array([np.nan, np.inf])}
    payload = {"history": history, "primary": "rmse", "regression": regression}
    with caplog.at_level(logging.WARNING, logger="runner"):
        figures = plots.draw(payload)
    assert list(figures) == ["plots/learning_curves.png"]
    assert warnings(caplog) == [
        "plots: plots/predicted_vs_true.png not drawn: "
        "no val prediction is finite (2 nan or infinite)"
    ]
    payload["regression"]["y_pred"] = np.array([np.nan, 2.0])  # one finite point: drawn
    figures = plots.draw(payload)
    labels = figures["plots/predicted_vs_true.png"].axes[0].get_legend_handles_labels()[1]
    assert "validation (n=1); 1 not finite, not shown" in labels
    for figure in figures.values():
        plots.close(figure)


def test_check_reads_the_tables_header(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = table(tmp_path, "Area,RoofType,price.usd,Price\n1,Slate,2,3\n")
    semi = table(tmp_path, "Area;RoofType;Price\n1;Slate;3\n", "semi.csv")
    base = ["experiment=house_tiny", f"data.path={path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert job_problems(base) == []
        assert job_problems(base + ["++data.columns.price.usd=drop"]) == []
        missing = job_problems(["experiment=house_tiny", "data.path=nope.csv"])
        assert missing == [f"data.path: 'nope.csv' is not a file (looked at {tmp_path}/nope.csv)"]
        assert (
            "data.target: unknown column 'Prize'. Did you mean 'Price'?"
            in job_problems(base + ["data.target=Prize"])[0]
        )
        assert (
            "data.columns: unknown column 'Roof'"
            in job_problems(base + ["+data.columns.Roof=drop"])[0]
        )
        assert "Did you mean 'sep'?" in job_problems(base + ["+data.read.sepp=x"])[0]
        assert (
            "holding ';': set `read: {sep: ';'}`"
            in job_problems(["experiment=house_tiny", f"data.path={semi}"])[0]
        )


def test_a_raw_table_with_dates_infinities_and_a_boolean_target_trains_and_logs(tmp_path):
    """One real run: a date column, an inf in a validation row, a True/False target. It ends
    FINISHED with finite metrics, and its logged model takes raw date strings and answers
    booleans."""
    ready_store(tmp_path)
    rng = np.random.default_rng(0)
    day = pd.date_range("2020-01-01", periods=120, freq="D")
    summer = np.cos(2 * np.pi * (day.day_of_year - 200) / 366) > 0
    frame = pd.DataFrame(
        {"day": day.strftime("%Y-%m-%d"), "x": rng.normal(size=120), "busy": summer}
    )
    frame.loc[110, "x"] = np.inf
    frame.to_csv(tmp_path / "days.csv", index=False)
    conf = tmp_path / "conf" / "data"
    conf.mkdir(parents=True)
    (conf / "days.yaml").write_text(
        f"name: days\ntype: csv\nnum_outputs: 1\npath: {tmp_path / 'days.csv'}\ntarget: busy\n"
        "task: binary\nval_size: 20\nshuffle: true\ncolumns:\n  day: {date: [year, dayofyear]}\n"
    )
    proc = run_cli(
        "--config-dir", str(tmp_path / "conf"), "data=days", "model=xor_linear",
        "trainer.epochs=3", "trainer.batch_size=16", "trainer.progress=lines",
        "trainer.plots=false", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "column 'x' holds inf or -inf in 1 row(s)" in proc.stdout + proc.stderr
    client = MlflowClient(store_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("days").experiment_id])
    assert run.info.status == "FINISHED" and math.isfinite(run.data.metrics["val_acc"])
    mlflow.set_tracking_uri(store_uri(tmp_path))
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    pred = np.asarray(model.predict(frame.drop(columns=["busy"]).head(5)))
    assert pred.dtype == np.bool_

    # python -m runner.predict with the run's id, its rows read 7 at a time: the pyfunc
    # model's classes, and with --proba each class's probability (summing to 1, the larger
    # one the predicted class's).
    out = tmp_path / "busy.csv"
    done = subprocess.run(
        [sys.executable, "-m", "runner.predict", run.info.run_id, "--input",
         str(tmp_path / "days.csv"), "--output", str(out), "--proba", "--chunk-rows", "7"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"120 rows predicted by runs:/{run.info.run_id}/model")
    table = pd.read_csv(out)
    assert list(table.columns) == ["day", "x", "busy", "prediction", "proba_False", "proba_True"]
    assert table["prediction"].tolist() == list(model.predict(frame.drop(columns=["busy"])))
    assert np.allclose(table["proba_False"] + table["proba_True"], 1.0)
    assert ((table["proba_True"] >= 0.5) == table["prediction"]).all()


def test_an_encoding_python_does_not_know_names_the_read_option(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,y\n1,2\n3,4\n")
    with pytest.raises(ConfigError, match=r"^data.read.encoding: 'latin-9' is not an encoding"):
        tabular.csv(str(path), target="y", read={"encoding": "latin-9"})
