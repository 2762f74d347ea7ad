"""A general table dataset (CSV, TSV or Parquet), with feature columns as the books treat
them (Raschka ch. 13, d2l ch. 2 and 5.7): numeric columns standardized, an ordinal
bucketized, nominal columns one-hot (`dummy_na`), dates as year and cycles, ids dropped; a
test split, K-fold cross-validation.

Every statistic (means, deviations, ranges, categories, the target's scale) is fitted on
the training rows only and applied unchanged to validation, test and new raw rows
(`TabularPredictor`, the model logged to MLflow).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from runner.components.datasets import dates
from runner.components.datasets.base import TASKS, DataSplits
from runner.components.datasets.table_checks import (
    check_encoded_size,
    check_feature_names,
    warn_memorized,
    warn_misread_numbers,
)
from runner.components.datasets.table_file import read_header, read_table
from runner.errors import ConfigError, unknown_name
from runner.registry import DATASETS
from runner.training.memory import available_host_memory

if TYPE_CHECKING:  # pandas is imported only where a table is read: other runs skip it
    import pandas as pd

log = logging.getLogger("runner")
NUMERIC = ("standardize", "minmax", "log1p", "none")  # transforms of a numeric column
TRANSFORMS = (*NUMERIC, "bucketize", "onehot", "words", "date", "drop")
MAPPED_FORMS = (
    "Or {bucketize: [b1, b2]}, {onehot: {dummy_na: false}}, {words: {min_count: 2}}, "
    f"{dates.EXAMPLE}."
)
FLOAT32_MAX = float(np.finfo(np.float32).max)  # the network's numbers: 3.4e38
WORD = r"[a-z0-9]+"  # a token of a text column: lower-case letters and digits
DROP_MISSING = ("target", "any")


@dataclass
class Column:
    """One feature column's transform and what it learned from the training rows."""

    name: str
    kind: str  # one of TRANSFORMS
    boundaries: list[float] = field(default_factory=list)  # bucketize
    fill: float = 0.0  # a missing value's stand-in (training mean, after log1p if any)
    shift: float = 0.0  # value -> (value - shift) / scale
    scale: float = 1.0
    categories: list[Any] = field(default_factory=list)  # onehot, without the NA column
    dummy_na: bool = True  # onehot: a column for missing (and unseen) values
    min_count: int = 2  # words: keep words found in at least this many training rows
    parts: list[str] = field(default_factory=list)  # date: year and periodic parts
    date_format: str = ""  # date: the format of the training rows' dates

    def features(self) -> list[str]:
        """The names of the columns this one becomes (get_dummies' names for onehot)."""
        if self.kind == "onehot":
            na = [f"{self.name}_nan"] if self.dummy_na else []
            return [f"{self.name}_{c}" for c in self.categories] + na
        if self.kind == "words":
            return [f"{self.name}:{word}" for word in self.categories]
        if self.kind == "date":
            return dates.feature_names(self.name, self.parts)
        return [self.name]

    def fit(self, values: pd.Series) -> None:
        """Learn the statistics of this column's training values."""
        if self.kind == "onehot":
            self.categories = sorted(values.dropna().unique().tolist(), key=_category_order)
            return
        if self.kind == "words":
            rows_with = _words(values).reset_index().drop_duplicates().iloc[:, 1].value_counts()
            self.categories = sorted(rows_with[rows_with >= self.min_count].index.tolist())
            return
        if self.kind == "date":
            self.date_format = dates.guess_format(values)
            stamps = dates.parse(values, self.name, self.date_format)
            self._fit_numbers(dates.years(stamps), "standardize")
            return
        numbers = _numbers(values, self.name, self.kind)
        if self.kind == "log1p":
            if (numbers <= -1).any():
                raise ConfigError(
                    f"data.columns.{self.name}: log1p needs values above -1; column "
                    f"{self.name!r} holds {float(np.nanmin(numbers))!r}"
                )
            numbers = np.log1p(numbers)
        self._fit_numbers(numbers, self.kind)

    def _fit_numbers(self, numbers: np.ndarray, kind: str) -> None:
        """The fill (mean), and shift and scale for standardize or minmax, all finite."""
        mean, std = _mean_std(numbers)
        self.fill = mean
        if kind == "standardize":
            self.shift, self.scale = mean, std if std > 0 else 1.0
        elif kind == "minmax":
            low, high = float(np.nanmin(numbers)), float(np.nanmax(numbers))
            self.shift, self.scale = low, (high - low) or 1.0
        if not all(math.isfinite(v) for v in (self.fill, self.shift, self.scale)):
            raise ConfigError(
                f"data.columns.{self.name}: column {self.name!r} holds values up to "
                f"{float(np.nanmax(np.abs(numbers))):.3g}, too large for {kind} (float64 "
                "overflows); use log1p, or rescale the column"
            )

    def encode(self, values: pd.Series, out: np.ndarray) -> None:
        """Write this column's features for `values` into `out` (rows x len(features()))."""
        if self.kind == "onehot":
            self._one_hot(values, out)
        elif self.kind == "words":
            self._bag_of_words(values, out)
        elif self.kind == "date":
            self._date(values, out)
        else:
            out[:, 0] = self._number(_numbers(values, self.name, self.kind))

    def _number(self, numbers: np.ndarray) -> np.ndarray:
        """Gaps filled, then scaled; a ConfigError if a value overflows float32."""
        if self.kind == "log1p":
            numbers = np.log1p(np.where(numbers > -1, numbers, np.nan))
        numbers = np.where(np.isnan(numbers), self.fill, numbers)
        if self.kind == "bucketize":  # torch.bucketize(right=True): i with b[i-1] <= x < b[i]
            return np.searchsorted(self.boundaries, numbers, side="right")
        with np.errstate(over="ignore"):
            scaled = (numbers - self.shift) / self.scale
        too_large = ~(np.abs(scaled) <= FLOAT32_MAX)
        if too_large.any():
            raise ConfigError(
                f"data.columns.{self.name}: encoded with {self.kind!r}, column {self.name!r} "
                f"reaches {float(np.abs(numbers[too_large]).max()):.3g}, beyond float32's "
                f"largest number ({FLOAT32_MAX:.3g}), the network's precision; use standardize "
                "or log1p, or rescale the column"
            )
        return scaled

    def _date(self, values: pd.Series, out: np.ndarray) -> None:
        """Each part's features: the year standardized, a periodic part as sin and cos."""
        stamps = dates.parse(values, self.name, self.date_format)
        start = 0
        for part in self.parts:
            if part == "year":
                out[:, start] = self._number(dates.years(stamps))
                start += 1
            else:
                dates.encode_periodic(stamps, part, out[:, start : start + 2])
                start += 2

    def _bag_of_words(self, values: pd.Series, out: np.ndarray) -> None:
        """1 where a row's text holds a kept word (words unseen in training are ignored)."""
        tokens = _words(values.reset_index(drop=True))
        index = {word: i for i, word in enumerate(self.categories)}
        columns = tokens.map(index)
        kept = columns.notna()
        out[tokens.index[kept].to_numpy(), columns[kept].astype(np.int64).to_numpy()] = 1.0

    def _one_hot(self, values: pd.Series, out: np.ndarray) -> None:
        import pandas as pd

        # factorize, then map the few distinct values: far faster than pd.Categorical on
        # a large text column.
        codes, uniques = pd.factorize(values)
        lookup = pd.Index(self.categories, dtype=object).get_indexer(
            pd.Index(uniques, dtype=object)
        )
        codes = np.append(lookup, -1)[codes]  # factorize's -1 (missing) stays -1
        unseen = int((codes < 0).sum() - values.isna().sum())
        if unseen:
            examples = sorted({str(v) for v in values[(codes < 0) & values.notna()][:3]})
            where = f"the {self.name}_nan column" if self.dummy_na else "no column (all zeros)"
            log.warning(
                "data.columns.%s: %d value(s) unseen in the training rows (e.g. %s) go to %s",
                self.name, unseen, ", ".join(examples), where,
            )  # fmt: skip
        rows = np.arange(len(codes))
        if self.dummy_na:
            codes[codes < 0] = len(self.categories)  # missing or unseen: the NA column
        else:
            rows, codes = rows[codes >= 0], codes[codes >= 0]
        out[rows, codes] = 1.0


class TabularEncoder:
    """Raw rows -> float32 features, column by column, fitted on the training rows."""

    def __init__(self, columns: list[Column]) -> None:
        self.columns = [c for c in columns if c.kind != "drop"]
        # A classification target's classes as read (True, 3, 'yes'), in class-code order:
        # what the logged model answers.
        self.target_classes: list[Any] | None = None

    @property
    def feature_names(self) -> list[str]:
        """The encoded features' names, in order."""
        return [name for column in self.columns for name in column.features()]

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        """Learn every column's statistics from the training rows in `frame`."""
        for column in self.columns:
            if frame[column.name].isna().all():
                raise ConfigError(
                    f"data.columns.{column.name}: column {column.name!r} is entirely missing "
                    f"in the training rows; drop it ({column.name}: drop)"
                )
            column.fit(frame[column.name])
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode rows (the training columns must be there; others are ignored)."""
        missing = [c.name for c in self.columns if c.name not in frame.columns]
        if missing:
            raise ValueError(f"rows lack the feature column(s) {missing}")
        widths = [len(column.features()) for column in self.columns]
        # One float32 array, each column writing its own block: no float64 intermediate.
        out = np.zeros((len(frame), sum(widths)), dtype=np.float32)
        start = 0
        for column, width in zip(self.columns, widths, strict=True):
            if len(frame):
                column.encode(frame[column.name], out[:, start : start + width])
            start += width
        return out

    def state(self) -> dict[str, Any]:
        """Every fitted statistic, as plain JSON-able values (logged with the run)."""
        state = {
            "columns": [
                {k: _plain(v) for k, v in column.__dict__.items()} for column in self.columns
            ],
            "features": self.feature_names,
        }
        if self.target_classes is not None:
            state["target_classes"] = _plain(self.target_classes)
        return state


@dataclass
class TabularPredictor:
    """A trained network with its encoder: raw rows in, predictions in the data's units
    (class names for classification). What the run's MLflow model wraps."""

    encoder: TabularEncoder
    model: torch.nn.Module
    task: str
    output_kind: str
    target_mean: float = 0.0
    target_std: float = 1.0
    class_names: list[str] | None = None

    @torch.inference_mode()
    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predictions for raw rows, encoded with the training rows' statistics."""
        return self.predict_with_probabilities(frame, probabilities=False)[0]

    @torch.inference_mode()
    def predict_with_probabilities(
        self, frame: pd.DataFrame, probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions, and (for a classification) each class's probability, [rows, classes]
        in the order of `classes()`."""
        from runner.training.metrics import TaskMetrics

        self.model.eval()
        x = torch.from_numpy(self.encoder.transform(frame))
        metrics = TaskMetrics(self.task, self.output_kind, self.target_mean, self.target_std)
        output = self.model(x)
        pred = metrics.predict(output).numpy()
        proba = None
        if probabilities and self.class_names is not None:
            proba = metrics.probabilities(output).numpy()
        if self.class_names is None:
            return pred, proba
        return self.classes()[pred], proba

    def classes(self) -> np.ndarray:
        """The classes as the table held them (True/False stay booleans), in code order."""
        classes = np.asarray(getattr(self.encoder, "target_classes", None) or self.class_names)
        return classes.astype(object) if classes.dtype.kind in "US" else classes


def _words(values: pd.Series) -> pd.Series:
    """Each row's words, one per entry, indexed by the row's position in `values`."""
    return values.astype("string").str.lower().str.findall(WORD).explode().dropna()


def _category_order(value: Any) -> tuple[int, Any]:
    """Sort numbers before text, each in its own order (get_dummies sorts the categories)."""
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def _numbers(values: pd.Series, name: str, kind: str) -> np.ndarray:
    """A column as float64 (inf and -inf as gaps), or a ConfigError if it holds text a
    numeric transform needs."""
    import pandas as pd

    numbers = pd.to_numeric(values, errors="coerce")
    text = values.notna() & numbers.isna()
    if text.any():
        example = values[text].iloc[0]
        raise ConfigError(
            f"data.columns.{name}: {kind!r} needs numbers, but column {name!r} holds text "
            f"such as {example!r}; if it marks a missing value set data.read.na_values: "
            f"[{example!r}], else use onehot or drop"
        )
    numbers = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isinf(numbers), np.nan, numbers)


def _mean_std(numbers: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation of the known values, computed on values divided
    by their largest size when that is huge: squares above 1e308 would overflow to inf."""
    size = float(np.nanmax(np.abs(numbers)))
    unit = size if size > 1e150 else 1.0
    scaled = numbers / unit
    mean = float(np.nanmean(scaled))
    std = float(np.nanstd(scaled, ddof=1)) if (~np.isnan(scaled)).sum() > 1 else 0.0
    return mean * unit, std * unit  # a Python float overflows to inf, checked by the caller


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def column_plan(
    frame: pd.DataFrame,
    target: str,
    columns: dict | None,
    categorical: Sequence[str] | None,
    numeric: str,
) -> list[Column]:
    """Each feature column with its transform: as `columns` says, else onehot for those in
    `categorical` and for text, else `numeric` (standardize). A text column left to onehot
    whose cells are mostly numbers gets a warning (a few words made it text)."""
    import pandas as pd

    chosen = chosen_columns(list(frame.columns), target, columns, categorical)
    plan = []
    for name in frame.columns:
        if name == target:
            continue
        if name in chosen:
            plan.append(chosen[name])
        elif pd.api.types.is_numeric_dtype(frame[name]):
            plan.append(Column(name, numeric))
        else:
            warn_misread_numbers(name, frame[name])
            plan.append(Column(name, "onehot"))
    if all(c.kind == "drop" for c in plan):
        raise ConfigError(
            "data.columns: no feature column is left (every column is dropped); keep at least one"
        )
    return plan


def chosen_columns(
    names: list[str], target: str, columns: dict | None, categorical: Sequence[str] | None
) -> dict[str, Column]:
    """The columns `columns:` and `categorical:` name, checked against the header, with their
    transforms. A dotted column name may come as nested keys (`+data.columns.price.usd=drop`
    gives {price: {usd: drop}}): read as the column `price.usd`."""
    if target not in names:
        raise ConfigError(unknown_name("data.target", "column", target, names))
    features = [c for c in names if c != target]
    chosen: dict[str, Column] = {}
    for given, spec in (columns or {}).items():
        for name, entry in _dotted(str(given), spec, set(map(str, names))):
            if name == target:
                raise ConfigError(f"data.columns.{name}: {name!r} is the target, not a feature")
            if name not in features:
                raise ConfigError(unknown_name("data.columns", "column", name, features))
            chosen[name] = _column(name, entry)
    for name in categorical or []:
        if name == target:
            raise ConfigError(
                f"data.categorical: {name!r} is the target, not a feature; a target's classes "
                "come from data.task: binary or multiclass"
            )
        if name not in features:
            raise ConfigError(unknown_name("data.categorical", "column", name, features))
        chosen.setdefault(name, Column(name, "onehot"))
    return chosen


def _dotted(name: str, spec: Any, names: set[str]) -> list[tuple[str, Any]]:
    """`{price: {usd: drop}}` as [(`price.usd`, drop)] when `price` is no column but
    `price.usd` is (Hydra reads the dots of a command-line key as nesting)."""
    nested = isinstance(spec, dict) and name not in names
    if not nested or not any(n.startswith(f"{name}.") for n in names):
        return [(name, spec)]
    return [pair for key, value in spec.items() for pair in _dotted(f"{name}.{key}", value, names)]


def _column(name: str, spec: Any) -> Column:
    """A `columns:` entry: a transform's name, `{bucketize: [boundaries]}`,
    `{onehot: {dummy_na: false}}` (no column for missing values),
    `{words: {min_count: N}}` (a text column as a bag of its frequent words), or
    `{date: [year, month, dayofweek, dayofyear, hour]}` (any of those parts)."""
    key = f"data.columns.{name}"
    if isinstance(spec, dict) and list(spec) == ["date"]:
        return Column(name, "date", parts=dates.parse_parts(f"{key}.date", spec["date"]))
    if isinstance(spec, dict) and list(spec) == ["words"]:
        options = spec["words"] or {}
        count = options.get("min_count", 2) if isinstance(options, dict) else None
        if set(options) - {"min_count"} or not isinstance(count, int) or count < 1:
            raise ConfigError(f"{key}.words: {options!r} is not a mapping like {{min_count: 2}}")
        return Column(name, "words", min_count=count)
    if isinstance(spec, dict) and list(spec) == ["onehot"]:
        options = spec["onehot"]
        if not isinstance(options, dict) or set(options) - {"dummy_na"}:
            raise ConfigError(
                f"{key}.onehot: {options!r} is not a mapping like {{dummy_na: false}}"
            )
        dummy_na = options.get("dummy_na", True)
        if not isinstance(dummy_na, bool):
            raise ConfigError(f"{key}.onehot.dummy_na: {dummy_na!r} is not true or false")
        return Column(name, "onehot", dummy_na=dummy_na)
    if isinstance(spec, dict) and list(spec) == ["bucketize"]:
        bounds = spec["bucketize"]
        ok = (
            isinstance(bounds, list)
            and bounds
            and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                for b in bounds
            )
        )
        if not ok or any(a >= b for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ConfigError(
                f"{key}.bucketize: {bounds!r} is not an increasing list of numbers, "
                "e.g. [73, 76, 79]"
            )
        return Column(name, "bucketize", boundaries=[float(b) for b in bounds])
    if not isinstance(spec, str) or spec not in TRANSFORMS:
        shown = spec if isinstance(spec, str) else repr(spec)
        raise ConfigError(
            unknown_name(key, "column transform", shown, TRANSFORMS) + " " + MAPPED_FORMS
        )
    if spec == "bucketize":
        raise ConfigError(
            f"{key}: bucketize needs its boundaries, e.g. {{bucketize: [73, 76, 79]}}"
        )
    if spec == "date":
        raise ConfigError(f"{key}: date needs its parts, e.g. {dates.EXAMPLE}")
    return Column(name, spec)


def split_size_problem(key: str, size: Any) -> str | None:
    """scikit-learn's rule for a split's size (train_test_split): a fraction lies in (0, 1),
    a row count is a whole number >= 0 (0: no such split). 1.5 is neither."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        return f"{key}: {size!r} is not a number"
    if isinstance(size, int) and size >= 0 or size == 0 or 0 < size < 1:
        return None
    return (
        f"{key}: {size!r} is neither a fraction in (0, 1) nor a row count; allowed: a fraction "
        "strictly between 0 and 1, or a whole number of rows (0: none)"
    )


def csv_problems(args: dict[str, Any]) -> list[str]:
    """The csv loader's rules that need no data (its split sizes, the form of `columns`),
    for the validator."""
    sizes = {name: args[name] for name in ("test_size", "val_size") if name in args}
    found = [p for name, size in sizes.items() if (p := split_size_problem(f"data.{name}", size))]
    columns = args.get("columns")
    if columns is not None and not isinstance(columns, dict):
        found.append(
            f"data.columns: {columns!r} is not a mapping; give each column its transform, "
            "e.g. {cylinders: standardize, car_name: drop} (a column not listed is kept: "
            "`numeric` if numeric, else onehot)"
        )
    return found


def _count(size: float, n_rows: int, key: str) -> int:
    """Rows for a split: a count, or a fraction of the rows (rounded up, as scikit-learn's
    train_test_split rounds a test fraction); it must leave training rows."""
    problem = split_size_problem(key, size)
    if problem:
        raise ConfigError(problem)
    count = math.ceil(size * n_rows) if 0 < size < 1 else int(size)
    if not 0 <= count < n_rows:
        raise ConfigError(
            f"{key}: {size!r} leaves no training rows out of {n_rows}; allowed: a count from "
            f"0 to {n_rows - 1} or a fraction below 1"
        )
    return count


def split_rows(
    n_rows: int,
    test_size: float,
    val_size: float,
    folds: int,
    fold: int,
    shuffle: bool,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test row indices.

    With `shuffle`, rows are permuted by `RandomState(seed)` and the first `test_size` of
    the permutation are the test rows: exactly scikit-learn's
    `train_test_split(rows, test_size=..., random_state=seed)`. Without, the last rows are
    held out. The rest are split by K-fold (fold `fold` of `folds` validates) or by
    `val_size` (the last of them).
    """
    order = np.random.RandomState(seed).permutation(n_rows) if shuffle else np.arange(n_rows)
    n_test = _count(test_size, n_rows, "data.test_size")
    if shuffle:
        test, rest = order[:n_test], order[n_test:]
    else:
        test, rest = order[n_rows - n_test :], order[: n_rows - n_test]
    if folds:
        if val_size:
            raise ConfigError("data.val_size: give either val_size or folds, not both")
        if not 2 <= folds <= len(rest):
            raise ConfigError(
                f"data.folds: {folds!r} is out of range; allowed: 2 to {len(rest)} (the rows "
                "left after the test split), or 0 for no cross-validation"
            )
        if not 0 <= fold < folds:
            raise ConfigError(f"data.fold: {fold!r} is out of range; allowed: 0 to {folds - 1}")
        from sklearn.model_selection import KFold

        kfold = KFold(n_splits=folds, shuffle=shuffle, random_state=seed if shuffle else None)
        train_idx, val_idx = list(kfold.split(rest))[fold]
        return rest[train_idx], rest[val_idx], test
    n_val = _count(val_size, len(rest), "data.val_size")
    return rest[: len(rest) - n_val], rest[len(rest) - n_val :], test


def check_table(
    path: str,
    target: str,
    read: dict | None = None,
    columns: dict | None = None,
    categorical: list | None = None,
    **_: Any,
) -> None:
    """What can be checked without reading the rows (`python -m runner.check`): the file
    exists, pandas reads its header with `data.read`, and the header holds the target and
    every column `columns` and `categorical` name. Raises a ConfigError."""
    chosen_columns(read_header(path, read), target, columns, categorical)


def encoded_as(fitted: DataSplits, **args: Any) -> DataSplits:
    """The table `args` describe (csv's arguments), split as they say, every row encoded
    with a trained run's statistics (`fitted`: its encoder, classes and target scaling)
    instead of statistics fitted on this table's own training rows: another table as that
    run's network sees it (`python -m runner.evaluate`)."""
    import inspect

    bound = inspect.signature(csv).bind(**args)
    bound.apply_defaults()
    return _table(fitted=fitted, **bound.arguments)


@DATASETS.register("csv", check=csv_problems, preflight=check_table, encode_as=encoded_as)
def csv(
    path: str,
    target: str,
    task: str = "regression",
    columns: dict | None = None,
    categorical: list | None = None,
    numeric: str = "standardize",
    drop_missing: str = "target",
    val_size: float = 0.0,
    test_size: float = 0.0,
    folds: int = 0,
    fold: int = 0,
    shuffle: bool = False,
    seed: int = 1,
    standardize_target: bool = False,
    metric: str | None = None,
    read: dict | None = None,
) -> DataSplits:
    """Load a table (CSV, TSV, Parquet; `read`: pandas options) and encode its feature
    columns (see the module's docstring)."""
    return _table(**locals(), fitted=None)


def _table(
    path: str,
    target: str,
    task: str,
    columns: dict | None,
    categorical: list | None,
    numeric: str,
    drop_missing: str,
    val_size: float,
    test_size: float,
    folds: int,
    fold: int,
    shuffle: bool,
    seed: int,
    standardize_target: bool,
    metric: str | None,
    read: dict | None,
    fitted: DataSplits | None,
) -> DataSplits:
    """csv's work; with `fitted`, its statistics encode the rows (nothing is fitted here)."""
    task = task if fitted is None else fitted.task
    if task not in TASKS:
        raise ConfigError(unknown_name("data.task", "task", task, TASKS))
    if numeric not in NUMERIC:
        raise ConfigError(unknown_name("data.numeric", "numeric transform", numeric, NUMERIC))
    if drop_missing not in DROP_MISSING:
        raise ConfigError(unknown_name("data.drop_missing", "choice", drop_missing, DROP_MISSING))
    frame = read_table(path, read)
    if fitted is None:
        plan = column_plan(frame, target, columns, categorical, numeric)
    else:
        plan = fitted_columns(frame, target, fitted, path)
    frame = _drop_missing(frame, target, drop_missing, [c.name for c in plan if c.kind != "drop"])
    train_rows, val_rows, test_rows = split_rows(
        len(frame), test_size, val_size, folds, fold, shuffle, seed
    )
    parts = {"train": train_rows, "val": val_rows, "test": test_rows}
    frames = {name: frame.iloc[rows] for name, rows in parts.items()}  # each copied once
    if fitted is None:
        encoder = TabularEncoder(plan).fit(frames["train"])
        check_feature_names(encoder.columns)
        for column in encoder.columns:
            warn_memorized(column, frames["train"][column.name])
    else:
        encoder = fitted.encoder
    check_encoded_size(encoder.columns, len(frame), available_host_memory())
    x = {name: torch.from_numpy(encoder.transform(part)) for name, part in frames.items()}
    if fitted is not None:
        y, class_names, mean, std = _fitted_target(frame[target], fitted)
    elif task == "regression":
        y, mean, std = _regression_target(frame[target], train_rows, standardize_target)
        class_names = None
    else:
        y, class_names, encoder.target_classes = _class_target(frame[target], parts, task)
        mean, std = 0.0, 1.0
    return DataSplits(
        x_train=x["train"],
        y_train=y[train_rows],
        x_val=x["val"],
        y_val=y[val_rows],
        task=task,
        num_outputs=len(class_names) if task == "multiclass" else 1,
        x_test=x["test"] if len(test_rows) else None,
        y_test=y[test_rows] if len(test_rows) else None,
        feature_names=encoder.feature_names,
        class_names=class_names,
        target_mean=mean,
        target_std=std,
        encoder=encoder,
        raw_example=frames["train"].head(5).drop(columns=[target]),
    )


def fitted_columns(frame: pd.DataFrame, target: str, fitted: DataSplits, path: str) -> list[Column]:
    """The trained run's feature columns, each of which the table must hold (and its target)."""
    plan = list(fitted.encoder.columns)
    missing = [c.name for c in plan if c.name not in frame.columns]
    missing += [target] if target not in frame.columns else []
    if missing:
        features = [c.name for c in plan]
        shown = "" if set(features) <= set(missing) else f"its features: {', '.join(features)}; "
        raise ConfigError(
            f"data.path: {path!r} lacks the column(s) {', '.join(missing)} that the trained "
            f"run reads ({shown}the target read here: {target!r})"
        )
    return plan


def _fitted_target(
    column: pd.Series, fitted: DataSplits
) -> tuple[torch.Tensor, list[str] | None, float, float]:
    """The target as the trained run saw its own: its class codes (a class it never
    learned is a ConfigError), or numbers scaled by its training rows' mean and std."""
    if fitted.class_names is None:
        y, _, _ = _regression_target(column, np.arange(len(column)), False)
        mean, std = fitted.target_mean, fitted.target_std
        return (y - mean) / std, None, mean, std
    names = column.astype(str)
    codes = names.map({c: i for i, c in enumerate(fitted.class_names)})
    unseen = names[codes.isna()]
    if len(unseen):
        raise ConfigError(
            f"data.target: class {unseen.iloc[0]!r} of column {column.name!r} is in "
            f"{len(unseen)} row(s) but is not one the run learned ({', '.join(fitted.class_names)})"
        )
    dtype = torch.float32 if fitted.task == "binary" else torch.int64
    y = torch.tensor(codes.to_numpy(dtype=np.int64), dtype=dtype)
    return y, list(fitted.class_names), 0.0, 1.0


def _drop_missing(frame: pd.DataFrame, target: str, how: str, features: list[str]) -> pd.DataFrame:
    """Drop rows with a missing target (or, `any`, a missing feature too), saying how many."""
    checked = [target] if how == "target" else [target, *features]
    keep = frame[checked].notna().all(axis=1)
    dropped = int((~keep).sum())
    if dropped:
        what = "target" if how == "target" else "value"
        log.info("data: dropped %d of %d rows with a missing %s", dropped, len(frame), what)
    if dropped == len(frame):
        raise ConfigError(f"data.drop_missing: {how!r} drops every row of the table")
    return frame[keep].reset_index(drop=True)


def _regression_target(
    column: pd.Series, train_rows: np.ndarray, standardize: bool
) -> tuple[torch.Tensor, float, float]:
    """The target as float32 (standardized by its training rows' mean and std, computed in
    float64, when `standardize`), with that mean and std; a ConfigError if it is not numbers
    or float32 cannot hold it."""
    import pandas as pd

    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.isna().any():
        example = column[numbers.isna()].iloc[0]
        comma = re.fullmatch(r"\s*[-+]?\d+,\d+\s*", str(example))
        hint = "; numbers written 18,5 need data.read.decimal: ','" if comma else ""
        raise ConfigError(
            f"data.target: column {column.name!r} is not numeric (it holds {example!r}); "
            f"a regression target must be numbers, or set data.task: binary or multiclass{hint}"
        )
    y = numbers.to_numpy(dtype=np.float64)
    largest = float(np.abs(y).max())
    if largest > FLOAT32_MAX:
        raise ConfigError(
            f"data.target: column {column.name!r} reaches {largest:.3g}, beyond float32's "
            f"largest number ({FLOAT32_MAX:.3g}), the network's precision; rescale it (e.g. "
            "in thousands or millions) or predict its logarithm"
        )
    mean, std = 0.0, 1.0
    if standardize:
        mean, std = float(y[train_rows].mean()), float(y[train_rows].std()) or 1.0
        y = (y - mean) / std
    elif largest**2 > FLOAT32_MAX:
        log.warning(
            "data.target: column %r reaches %.3g, whose square overflows float32 (an MSE "
            "loss becomes inf); set data.standardize_target: true", column.name, largest,
        )  # fmt: skip
    return torch.from_numpy(y.astype(np.float32)), mean, std


def _class_target(
    column: pd.Series, parts: dict[str, np.ndarray], task: str
) -> tuple[torch.Tensor, list[str], list[Any]]:
    """Class codes (float 0/1 for binary, int64 for multiclass), the class names (the sorted
    training values as text) and the classes as the table holds them."""
    import pandas as pd

    names = column.astype(str)
    train = names.iloc[parts["train"]]
    classes = sorted(train.unique())
    key, where = f"data.task: {task!r} needs", f"in the training rows of column {column.name!r}"
    if len(classes) < 2:
        others = sorted(set(names.unique()) - set(classes))
        hint = (
            f"; other rows hold {others}: set data.shuffle: true to mix them in"
            if others
            else "; a target needs at least two classes"
        )
        raise ConfigError(f"{key} 2 classes {where}, found only {classes}{hint}")
    if task == "binary" and len(classes) != 2:
        raise ConfigError(
            f"{key} 2 classes {where}, found {len(classes)}: {classes}; set data.task: multiclass"
        )
    codes = names.map({c: i for i, c in enumerate(classes)})
    for split, words in (("val", "validation"), ("test", "test")):
        unseen = names.iloc[parts[split]][codes.iloc[parts[split]].isna()]
        if len(unseen):
            raise ConfigError(
                f"data.target: class {unseen.iloc[0]!r} of column {column.name!r} is in "
                f"{int((unseen == unseen.iloc[0]).sum())} {words} row(s) but in no training row "
                f"({len(unseen)} {words} row(s) hold unseen classes): the network cannot predict "
                "it; set data.shuffle: true (rows in file order keep it out of training), or "
                "drop those rows"
            )
    first = pd.DataFrame({"name": train, "value": column.iloc[parts["train"]]})
    values = first.drop_duplicates("name").set_index("name")["value"]
    dtype = torch.float32 if task == "binary" else torch.int64
    y = torch.tensor(codes.to_numpy(dtype=np.int64), dtype=dtype)
    return y, classes, [_plain(values[c]) for c in classes]
