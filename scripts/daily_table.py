"""A daily table as a user brings one (README "Tables", issue 21): a date text column, gaps
in numeric columns, a text target with three classes. And how much a plain logistic
regression gains from the date's year and day of the year.

    .venv/bin/python scripts/daily_table.py --out daily.csv [--days 1500] [--seed 0]

The generator: one row per day from 2019-01-01. A bike-share's `demand` (low, normal, high)
follows a latent score: the season (a peak in July, -cos of the day of the year), a yearly
growth (+0.5 per year) and the day's rain, plus noise. `temp_c` follows the season too but
with its own noise; `rain_mm` and `wind_kmh` are weather; each numeric column has about 5%
gaps. So the weather alone predicts a part of the season and none of the growth: the date
carries real signal. The script writes the CSV, then prints scikit-learn's plain logistic
regression accuracy on the validation rows (the last 20% after a seeded shuffle, as
`val_size: 0.2, shuffle: true, seed: 1` splits them) with and without the date's parts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def daily_table(days: int = 1500, seed: int = 0) -> pd.DataFrame:
    """The table, one row per day (see the module's docstring)."""
    rng = np.random.default_rng(seed)
    day = pd.date_range("2019-01-01", periods=days, freq="D")
    season = -np.cos(2 * np.pi * (day.day_of_year.to_numpy() - 1) / 365.25)  # 1 in July
    growth = 0.5 * (day.year.to_numpy() - 2019 + (day.day_of_year.to_numpy() - 1) / 365.25)
    temp = 12 + 9 * season + rng.normal(0, 4, days)
    rain = rng.gamma(0.6, 4, days)
    wind = rng.gamma(4, 4, days)
    score = 1.3 * season + growth - 0.12 * rain + rng.normal(0, 0.6, days)
    score -= np.median(score)
    demand = np.where(score < -0.9, "low", np.where(score > 0.9, "high", "normal"))
    frame = pd.DataFrame(
        {
            "day": day.strftime("%Y-%m-%d"),
            "temp_c": temp.round(1),
            "rain_mm": rain.round(1),
            "wind_kmh": wind.round(1),
            "demand": demand,
        }
    )
    for column in ("temp_c", "rain_mm", "wind_kmh"):
        frame.loc[rng.random(days) < 0.05, column] = np.nan
    return frame


def date_parts(day: pd.Series) -> pd.DataFrame:
    """The features runner's `{date: [year, dayofyear]}` makes: the year, and the day of the
    year as a sin/cos pair."""
    stamps = pd.to_datetime(day)
    angle = 2 * np.pi * (stamps.dt.day_of_year - 1) / (365 + stamps.dt.is_leap_year)
    return pd.DataFrame(
        {"year": stamps.dt.year, "doy_sin": np.sin(angle), "doy_cos": np.cos(angle)}
    )


def logistic_accuracy(frame: pd.DataFrame, with_date: bool) -> float:
    """Validation accuracy of a standardized, mean-imputed plain logistic regression."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = frame[["temp_c", "rain_mm", "wind_kmh"]]
    if with_date:
        x = pd.concat([x, date_parts(frame["day"])], axis=1)
    order = np.random.RandomState(1).permutation(len(frame))  # runner's shuffle, seed 1
    n_val = int(np.ceil(0.2 * len(frame)))
    train, val = order[: len(frame) - n_val], order[len(frame) - n_val :]
    model = make_pipeline(StandardScaler(), SimpleImputer(), LogisticRegression(max_iter=1000))
    model.fit(x.iloc[train], frame["demand"].iloc[train])
    return float(model.score(x.iloc[val], frame["demand"].iloc[val]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("daily.csv"))
    parser.add_argument("--days", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    frame = daily_table(args.days, args.seed)
    frame.to_csv(args.out, index=False)
    classes = frame["demand"].value_counts().to_dict()
    print(f"wrote {args.out}: {len(frame)} rows; classes {classes}")
    for with_date in (False, True):
        features = "weather + year + day of year" if with_date else "weather only"
        print(f"logistic regression, {features}: {logistic_accuracy(frame, with_date):.3f}")


if __name__ == "__main__":
    main()
