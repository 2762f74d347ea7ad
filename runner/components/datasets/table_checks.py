"""What a first look at a raw table should say, once its columns are fitted on the training
rows: a text column that would only be memorized (an id, a date, a name), a numeric column
read as text because of a few words or separators, feature names that collide, and an
encoded table too large for this machine's memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from runner.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from runner.components.datasets.tabular import Column

log = logging.getLogger("runner")
DISTINCT_SHARE = 0.5  # one-hot levels above this share of the training rows: memorized
MIN_LEVELS = 20  # a tiny table's few categories are not worth a warning
NUMERIC_SHARE = 0.5  # a text column whose cells are mostly numbers was probably misread
SAMPLED_VALUES = 10_000  # distinct values looked at for numbers (the most frequent ones)
ENCODED_MEMORY_SHARE = 0.5  # the encoded table may take at most this share of free memory
FLOAT32 = 4  # bytes per encoded feature value


def warn_memorized(column: Column, values: pd.Series) -> None:
    """One warning for a one-hot column whose values are nearly all distinct in the training
    rows: each would become its own feature, seen once, and be memorized."""
    rows = int(values.notna().sum())
    levels = len(column.categories)
    if column.kind != "onehot" or levels < MIN_LEVELS or levels <= DISTINCT_SHARE * rows:
        return
    if _number_cells(values)[0] >= NUMERIC_SHARE:
        return  # numbers read as text: warn_misread_numbers names the fix
    name = column.name
    dates = " (its values look like dates)" if _looks_like_dates(values) else ""
    log.warning(
        "data.columns.%s: column %r has %d distinct values in %d training rows%s: one-hot, each "
        "value is its own feature and the model memorizes them; set %s: drop (an id), "
        "%s: {words: {min_count: 2}} (free text) or %s: {date: [year, month, dayofweek, "
        "dayofyear]} (dates)", name, name, levels, rows, dates, name, name, name,
    )  # fmt: skip


def _looks_like_dates(values: pd.Series) -> bool:
    from pandas.tseries.api import guess_datetime_format

    known = values.dropna()
    return bool(len(known)) and guess_datetime_format(str(known.iloc[0])) is not None


def warn_misread_numbers(name: str, values: pd.Series) -> None:
    """One warning for a text column whose cells are mostly numbers: a few words (`?`,
    `unknown`) or thousands separators made pandas read it as text, and it would become one
    one-hot feature per distinct value."""
    share, counts, numbers, plain = _number_cells(values)
    if share < NUMERIC_SHARE:
        return
    text = counts.index.to_series()
    fixes = []
    words = counts[~numbers]
    if len(words):
        shown = ", ".join(repr(w) for w in words.index[:5])
        fixes.append(f"data.read.na_values: [{shown}] reads such cells as gaps")
    written = text[numbers & ~plain]
    if written.str.contains(r"\d,\d{3}(?:\D|$)").any():
        fixes.append("data.read.thousands: ',' reads 1,234 as 1234")
    if written.str.contains(r"\d,\d").any() and not written.str.contains(r"\d,\d{3}(?:\D|$)").all():
        fixes.append("data.read.decimal: ',' reads 18,5 as 18.5")
    if written.str.contains(r"\d[\s\u00a0']\d{3}").any():
        fixes.append("data.read.thousands: ' ' (or \"'\") reads 1 234 as 1234")
    seen = [f"the others: {', '.join(map(repr, words.index[:3]))}" if len(words) else ""]
    seen.append(f"some written like {', '.join(map(repr, written[:2]))}" if len(written) else "")
    log.warning(
        "data.columns.%s: column %r is read as text, but %s%% of its cells are numbers "
        "(%s): as text it becomes one one-hot feature per value; %s (or list it as "
        "%s: onehot if it is a category)",
        name, name, _percent(share),
        "; ".join(filter(None, seen)), "; ".join(fixes), name,
    )  # fmt: skip


def _percent(share: float) -> str:
    """A share as a percentage that reads 100 only when it is all (298 of 299: 99.7)."""
    if share == 1 or share < 0.995:
        return f"{100 * share:.0f}"
    return f"{min(99.9, 100 * share):.1f}"


def _number_cells(values: pd.Series) -> tuple[float, pd.Series, pd.Series, pd.Series]:
    """The share of cells that are numbers as written (plain, or with thousands separators
    or a decimal comma), over the SAMPLED_VALUES most frequent values; with those values'
    counts, which are numbers, and which are plain numbers."""
    import pandas as pd

    counts = values.dropna().astype(str).value_counts().head(SAMPLED_VALUES)
    text = counts.index.to_series()
    plain = pd.to_numeric(text, errors="coerce").notna()
    grouped = pd.to_numeric(text.str.replace(r"[,'\s\u00a0]", "", regex=True), errors="coerce")
    comma = pd.to_numeric(text.str.replace(".", "").str.replace(",", "."), errors="coerce")
    numbers = plain | grouped.notna() | comma.notna()
    share = float(counts[numbers].sum() / counts.sum()) if len(counts) else 0.0
    return share, counts, numbers, plain


def check_feature_names(columns: list[Column]) -> None:
    """Refuse two features of the same name (a one-hot `cat` = `x` beside a column `cat_x`):
    the second would silently shadow the first in every report and in the logged model."""
    seen: dict[str, Column] = {}
    for column in columns:
        for feature in column.features():
            other = seen.setdefault(feature, column)
            if other is not column:
                raise ConfigError(
                    f"data.columns.{column.name}: feature {feature!r} comes from both column "
                    f"{other.name!r} ({other.kind}) and column {column.name!r} ({column.kind}); "
                    "rename one of them in the file's header, or drop one"
                )


def check_encoded_size(columns: list[Column], rows: int, available: int | None) -> None:
    """Refuse, before encoding, a table whose float32 features would take more than
    ENCODED_MEMORY_SHARE of the memory still available, naming its widest column."""
    widths = [len(c.features()) for c in columns]
    need = rows * sum(widths) * FLOAT32
    if available is None or not columns or need <= ENCODED_MEMORY_SHARE * available:
        return
    widest = max(columns, key=lambda c: len(c.features()))
    name, levels = widest.name, len(widest.categories)
    what = {"onehot": "levels", "words": "kept words"}.get(widest.kind, "")
    if not what:
        levels, what = len(widest.features()), "features"
    raise ConfigError(
        f"data.columns.{name}: column {name!r} has {levels:,} {what} in the training rows; "
        f"encoded, the table's {rows:,} rows x {sum(widths):,} features would take "
        f"{_gib(need)} of float32, more than half of the {_gib(available)} of memory available; "
        f"set {name}: drop (an id) or {name}: {{words: {{min_count: 2}}}} (text)"
    )


def _gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB"
