"""A date column as features: `year` a number (standardized by the column), the periodic
parts (month, day of the week, day of the year, hour) each a sin/cos pair, so that December
sits next to January and Sunday next to Monday."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from runner.errors import ConfigError, unknown_name

if TYPE_CHECKING:
    import pandas as pd

PARTS = ("year", "month", "dayofweek", "dayofyear", "hour")
PERIODIC = PARTS[1:]
EXAMPLE = "{date: [year, month, dayofweek, dayofyear, hour]}"


def parse_parts(key: str, parts: object) -> list[str]:
    """The `date:` list of a column entry: a non-empty subset of PARTS, each once."""
    if not isinstance(parts, list) or not parts:
        raise ConfigError(f"{key}: {parts!r} is not a list of date parts like {EXAMPLE}")
    for part in parts:
        if part not in PARTS:
            raise ConfigError(unknown_name(key, "date part", part, PARTS))
    if len(set(parts)) < len(parts):
        raise ConfigError(f"{key}: {parts!r} names a part twice")
    return list(parts)


def feature_names(name: str, parts: list[str]) -> list[str]:
    """`day_year`, then `day_month_sin`, `day_month_cos`, ... in the order of `parts`."""
    names = []
    for part in parts:
        cycle = [f"{name}_{part}_sin", f"{name}_{part}_cos"]
        names += [f"{name}_year"] if part == "year" else cycle
    return names


def guess_format(values: pd.Series) -> str:
    """The format pandas infers from the first date (month first, else day first when only
    that reads every value: 13/04/2021), kept with the encoder so that new rows parse exactly
    as the training rows did. ISO dates accept any precision."""
    import pandas as pd
    from pandas.tseries.api import guess_datetime_format

    if pd.api.types.is_datetime64_any_dtype(values):
        return ""
    known = values.dropna()
    if not len(known) or pd.api.types.is_numeric_dtype(values):
        return "mixed"  # parse() names the problem
    first = str(known.iloc[0])
    candidates = []
    for dayfirst in (False, True):
        with warnings.catch_warnings():  # (31/01/2021 read month first: the try below says)
            warnings.simplefilter("ignore", UserWarning)
            guessed = guess_datetime_format(first, dayfirst=dayfirst)
        if guessed is None:
            guessed = "mixed"  # each value on its own (slower, but it reads what it can)
        elif guessed.startswith("%Y-%m-%d"):
            guessed = "ISO8601"
        if guessed not in candidates:
            candidates.append(guessed)
    for candidate in candidates:
        if pd.to_datetime(known, format=candidate, errors="coerce").notna().all():
            return candidate
    return candidates[0]


def parse(values: pd.Series, name: str, date_format: str) -> pd.Series:
    """Timestamps (NaT for a gap), or a ConfigError naming the first value that is no date."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(values):
        return values.reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(values) and not values.isna().all():
        raise ConfigError(
            f"data.columns.{name}.date: column {name!r} holds numbers "
            f"({values.dropna().iloc[0]}), not dates; date needs text such as 2021-03-04 "
            "or 2021-03-04 17:30"
        )
    text = values.reset_index(drop=True)
    try:
        stamps = pd.to_datetime(text, format=date_format or None, errors="coerce")
    except ValueError:  # dates with several UTC offsets (summer time): compare them in UTC
        stamps = pd.to_datetime(text, format=date_format or None, errors="coerce", utc=True)
    bad = text.notna() & stamps.isna()
    if bad.any():
        good = text[~bad & text.notna()]
        like = f" like {good.iloc[0]!r}" if len(good) else ""
        raise ConfigError(
            f"data.columns.{name}.date: {text[bad].iloc[0]!r} in column {name!r} is not a "
            f"date{like} (format {date_format or 'unknown'}; {int(bad.sum())} such value(s)); "
            "fix those cells, or make them gaps with data.read.na_values"
        )
    return stamps


def years(stamps: pd.Series) -> np.ndarray:
    """Each date's year as float64 (NaN for a gap)."""
    return stamps.dt.year.to_numpy(dtype=np.float64, na_value=np.nan)


def phase(stamps: pd.Series, part: str) -> np.ndarray:
    """Where each date sits in the part's cycle, in [0, 1) (NaN for a gap)."""
    dt = stamps.dt
    if part == "month":
        position, period = dt.month - 1, 12
    elif part == "dayofweek":
        position, period = dt.day_of_week, 7
    elif part == "dayofyear":  # leap years have 366 days: 31 December is always just before 1
        position, period = dt.day_of_year - 1, 365 + dt.is_leap_year.astype("float64")
    else:  # hour, with its minutes and seconds: 17:30 is half way between 17 and 18
        position, period = dt.hour + dt.minute / 60 + dt.second / 3600, 24
    return (position / period).to_numpy(dtype=np.float64, na_value=np.nan)


def encode_periodic(stamps: pd.Series, part: str, out: np.ndarray) -> None:
    """Write sin and cos of a periodic part into `out`'s two columns; a gap stays (0, 0)."""
    angle = 2 * np.pi * phase(stamps, part)
    known = ~np.isnan(angle)
    out[known, 0] = np.sin(angle[known])
    out[known, 1] = np.cos(angle[known])
