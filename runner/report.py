"""Rebuild a sweep's or an experiment's report from MLflow alone.

    python -m runner.report <sweep run id | experiment name> [--tracking-uri URI] [--out DIR]

Works for any past sweep or experiment, after a crashed launcher, and against a remote
tracking server: it reads only what the runs logged (runner.sweep.report builds it).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from runner.errors import StoreError
from runner.sweep import report as reports
from runner.sweep.report import build_report, log_report, resolve_target
from runner.tracking import ServerUnreachable, check_server, command_store
from runner.tracking.store import failure_cause


def main(argv: list[str] | None = None) -> int:
    """Command line: print the report, write its files, optionally log it to the sweep."""
    parser = argparse.ArgumentParser(prog="python -m runner.report", description=__doc__)
    parser.add_argument("target", help="a sweep's parent run id, or an experiment name")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for comparison.csv/.md, configs.csv and the plots (capacity or seeds, curves)",
    )
    parser.add_argument("--log", action="store_true", help="also log the report to the sweep run")
    args = parser.parse_args(argv)
    uri, missing = command_store(args.tracking_uri)
    if missing:
        print(missing, file=sys.stderr)
        return 1
    client = MlflowClient(uri)
    try:
        check_server(uri)  # (MLflow's client would retry a refused connection for minutes)
        runs, title, parent = resolve_target(client, args.target)
        if not runs:
            print(f"error: {title} has no runs in {uri}", file=sys.stderr)
            return 1
        report = build_report(client, runs, title, parent)
    except LookupError as err:
        print(f"error: {err} (store {uri})", file=sys.stderr)
        return 1
    except (ServerUnreachable, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except MlflowException as err:  # (a query after the first: the server went away)
        print(f"error: the MLflow store {uri} failed: {failure_cause(err)}", file=sys.stderr)
        return 1
    print(report.text)
    out = Path(args.out or Path("outputs") / "reports" / args.target)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.csv").write_text(report.csv)
    (out / "comparison.md").write_text(report.markdown)
    (out / "configs.csv").write_text(report.configs_csv)
    for name, figure in report.figures.items():
        figure.savefig(out / name, dpi=100)
    names = ["comparison.csv", "comparison.md", "configs.csv", *report.figures]
    print(f"\nwritten: {out}/" + ", ".join(names))
    if args.log and parent is not None:
        log_report(client, parent.info.run_id, report)
    return 0


def __getattr__(name: str) -> Any:
    """The report's building blocks (`Row`, `table`, `capacity_plot`...) lived here before
    the command and the building were split: `runner.sweep.report` has them."""
    try:
        value = getattr(reports, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    warnings.warn(f"{__name__}.{name} is now runner.sweep.report.{name}", DeprecationWarning, 2)
    return value


if __name__ == "__main__":
    sys.exit(main())
