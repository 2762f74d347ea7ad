"""Evaluate a trained run on data, without training it again.

    python -m runner.evaluate SOURCE [data=NAME] [data.KEY=VALUE ...] [device=D] [--split S]

SOURCE is what `runner.predict` takes: a run id, a sweep's parent run id (its best job), an
experiment name (its best FINISHED run) or `models:/<name>@<alias>`. The run's own config
(its config.yaml) is rebuilt with the overrides applied: another data config, another table
(`data.path=...`), other split sizes, another device; nothing else may change (the model,
its weights and its training are the run's). The weights it kept (`trainer.keep`) are
loaded, a split is evaluated (`--split test|val|train|all`; by default every row of data
the overrides changed, else the run's own test split, or its validation split where it has
none) and the metrics are printed and logged as a new run in the run's experiment, named
`eval_<metric>`, tagged `runner.evaluates` with the run's id.

A table's rows are encoded with the run's own statistics (means, categories, the target's
scale), rebuilt from its own training data as `resume=` does: another table is seen as the
trained network sees new rows.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, RunError, StoreError, failure_message

if TYPE_CHECKING:
    from mlflow.entities import Run

    from runner.components.datasets import DataSplits

SPLITS = ("test", "val", "train", "all")
CHANGEABLE = ("data", "device")  # what an evaluation may change in the run's config
PREFIX = "eval_"  # the logged metrics' prefix


def apply_overrides(
    config: dict[str, Any], overrides: list[str], dirs: list[Path]
) -> tuple[dict[str, Any], bool]:
    """The run's config with the command line's overrides (Hydra's syntax) applied, and
    whether they changed its data; a ConfigError for a key outside data and device."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException
    from omegaconf import OmegaConf

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise ConfigError(f"overrides: {err}") from None
    cfg = OmegaConf.create(config)
    data_changed = False
    for override in parsed:
        key = override.key_or_group
        if key.split(".")[0] not in CHANGEABLE:
            raise ConfigError(
                f"{key}: evaluate changes only the data (data=<name>, data.<key>=<value>) and "
                "the device; the model, its weights and its training stay the run's own"
            )
        value = override.value()
        if override.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if node is not None and leaf in node:
                del node[leaf]
        elif key == "data" and isinstance(value, str):  # a data config by name
            cfg.data = data_config(value, dirs)
        else:
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        data_changed |= key.split(".")[0] == "data"
    return OmegaConf.to_container(cfg, resolve=True), data_changed


def data_config(name: str, dirs: list[Path]) -> Any:
    """The data config `data=<name>` chooses (shipped, or in a user's config folder), its
    interpolations left to resolve against the run's config."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config.choices import group_choice_problems
    from runner.config.project import CONF_DIR

    problems = group_choice_problems([f"data={name}"], dirs)
    if problems:
        raise ConfigError(problems)
    overrides = [f"data={name}"]
    extra = [d for d in dirs if d != CONF_DIR]
    if extra:
        overrides.append("hydra.searchpath=[" + ",".join(f"'file://{d}'" for d in extra) + "]")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg.data, resolve=False)


def chosen_split(split: str | None, data: DataSplits, data_changed: bool) -> str:
    """The split to evaluate: as asked, else every row of changed data, else the test split
    (the validation split where there is none)."""
    if split is None:
        if data_changed:
            return "all"
        return "test" if data.x_test is not None else "val" if len(data.x_val) else "train"
    rows = {"test": data.x_test, "val": data.x_val, "train": data.x_train}
    if split != "all" and (rows[split] is None or len(rows[split]) == 0):
        held = [name for name, x in rows.items() if x is not None and len(x)]
        raise ConfigError(
            f"--split: the data has no {split} rows; it has {', '.join(held)} rows (or all)"
        )
    return split


def split_tensors(data: DataSplits, split: str) -> tuple[Any, Any]:
    """The rows (features, targets) of one split, or of all of them in order."""
    import torch

    parts = {
        "train": (data.x_train, data.y_train),
        "val": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
    }
    if split != "all":
        return parts[split]
    present = [(x, y) for x, y in parts.values() if x is not None and len(x)]
    return torch.cat([x for x, _ in present]), torch.cat([y for _, y in present])


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """`logger`'s INFO lines left out while inside."""
    level = logging.getLogger(logger).level
    logging.getLogger(logger).setLevel(logging.WARNING)
    try:
        yield
    finally:
        logging.getLogger(logger).setLevel(level)


def evaluate_run(
    source: str, run_id: str, config: dict[str, Any], new_config: dict[str, Any],
    data_changed: bool, split: str | None, uri: str, experiment: str,
) -> tuple[dict[str, float], str, int]:  # fmt: skip
    """Load the run's kept weights into its model, evaluate the chosen rows; returns the
    metrics, the split and its row count."""
    from runner import builders
    from runner.config.spec import TrackingSpec, validate
    from runner.loop import evaluate
    from runner.registry import DATASETS
    from runner.tracking.init_from import initial_weights
    from runner.training import device
    from runner.training.seeding import seed_everything

    run_spec = validate(config)
    try:
        spec = validate(new_config)
    except ConfigError as err:
        where = f" (in run {run_id}'s config, with the overrides)"
        raise ConfigError([problem + where for problem in err.problems]) from None
    device.set_threads(spec.trainer.threads)
    seed_everything(run_spec.seed, run_spec.trainer.deterministic)
    outputs = config["data"].get("num_outputs")
    table = "encode_as" in DATASETS.get(run_spec.data.type, "data.type").meta
    trained = None
    if table or not data_changed:
        # Where other rows are evaluated, the run's own table only lends its statistics:
        # what its loader says of its rows (those dropped) is not about the rows evaluated.
        with _quiet("runner") if data_changed else contextlib.nullcontext():
            trained = builders.build_data(run_spec.data, outputs)
    data = trained
    if data_changed:
        data = builders.build_data(spec.data, None, fitted=trained)
    assert data is not None
    model, _ = builders.build_model(run_spec.model, data.input_shape)
    weights = initial_weights(
        source if source.startswith("models:/") else run_id,
        TrackingSpec(uri=uri, experiment=experiment), key="SOURCE",
    )  # fmt: skip
    try:
        builders.load_initial_weights(model, run_spec.model, weights)
    except ConfigError as err:
        raise ConfigError(
            f"data: rows of shape {list(data.input_shape)} do not fit run {run_id}'s model: "
            + str(err).split(": ", 2)[-1]
        ) from None
    parts = builders.build_training_parts(spec, model, data, device.resolve_device(spec.device))
    split = chosen_split(split, data, data_changed)
    x, y = split_tensors(data, split)
    metrics, _ = evaluate(parts.model, parts.loss_fn, parts.metrics, x.to(parts.device),
                          y.to(parts.device))  # fmt: skip
    return metrics, split, len(x)


def log_evaluation(
    client: Any, run: Run, new_config: dict[str, Any], metrics: dict[str, float],
    split: str, rows: int, overrides: list[str], command: str,
) -> str:  # fmt: skip
    """The evaluation as a FINISHED run in the source run's experiment; returns its id. It
    never stays RUNNING: a failure or Ctrl-C while it is written ends it FAILED or KILLED."""
    from mlflow.entities import Metric, Param

    from runner.job import config_yaml
    from runner.tracking import tags

    source_name = run.info.run_name or run.info.run_id
    data_name = str(new_config["data"].get("name", new_config["data"].get("type", "data")))
    changed_path = any(o.lstrip("+~").startswith("data.path=") for o in overrides)
    shown_data = Path(str(new_config["data"]["path"])).name if changed_path else data_name
    labels = {
        tags.EVALUATES: run.info.run_id,
        tags.EVAL_SPLIT: split,
        tags.DATA: data_name,
        tags.MODEL: str(run.data.tags.get(tags.MODEL, "")),
        tags.SOURCE_NAME: command,
        tags.SOURCE_TYPE: "LOCAL",
        tags.NOTE: (
            f"Evaluation of run `{source_name}` ({run.info.run_id}) on {rows} {split} rows "
            f"of data `{data_name}`, its kept weights, without training. Command: `{command}`"
        ),
    }
    made = client.create_run(
        run.info.experiment_id, run_name=f"eval {shown_data}/{split} {source_name}", tags=labels
    )
    run_id = made.info.run_id
    try:
        now = int(time.time() * 1000)
        params = {"evaluates": run.info.run_id, "split": split, "rows": str(rows)}
        params |= dict(o.split("=", 1) for o in overrides if "=" in o)
        if changed_path:  # as it was read (a relative path means nothing elsewhere)
            params = {k: v for k, v in params.items() if k.lstrip("+~") != "data.path"}
            params["data.path"] = str(Path(str(new_config["data"]["path"])).resolve())
        client.log_batch(
            run_id,
            metrics=[Metric(f"{PREFIX}{k}", float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k.lstrip("+~"), str(v)[:6000]) for k, v in params.items()],
        )
        client.log_text(run_id, config_yaml(new_config), "config.yaml")
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        client.set_terminated(run_id, status)
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def main(argv: list[str] | None = None) -> int:
    """Command line: resolve SOURCE, evaluate its kept weights, log the evaluation."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.evaluate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("source", help="run id, sweep run id, experiment name, or models:/ URI")
    parser.add_argument("overrides", nargs="*", help="data=NAME, data.KEY=VALUE, device=D")
    parser.add_argument("--split", choices=SPLITS, default=None, help="the rows to evaluate")
    parser.add_argument(
        "--config-dir", action="append", default=[], help="a folder of your own data configs"
    )
    parser.add_argument(
        "--tracking-uri", default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    import logging

    # What the data loader says (rows dropped for a missing value, unseen categories).
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from runner.config.project import conf_dirs
    from runner.tracking import ServerUnreachable, check_server, command_store, run_page
    from runner.training.progress import metric_text

    uri, missing = command_store(args.tracking_uri)
    if missing:
        print(missing, file=sys.stderr)
        return 1
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # (per download)
    import mlflow
    from mlflow.tracking import MlflowClient

    from runner.sweep.source import SourceError, resolve_source, run_config

    mlflow.set_tracking_uri(uri)  # (a models:/ SOURCE is read through it)
    client = MlflowClient(uri)
    command = " ".join(
        ["python -m runner.evaluate", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]
    )
    try:
        check_server(uri)
        _, run_id = resolve_source(client, args.source)
        run = client.get_run(run_id)
        if run_id != args.source:
            print(f"{args.source}: run {run_id} ({run.info.run_name})", flush=True)
        experiment = client.get_experiment(run.info.experiment_id).name
        config = run_config(client, run_id)
        dirs = conf_dirs([f"--config-dir={d}" for d in args.config_dir])
        new_config, data_changed = apply_overrides(config, args.overrides, dirs)
        metrics, split, rows = evaluate_run(
            args.source, run_id, config, new_config, data_changed, args.split, uri, experiment
        )
        logged = log_evaluation(
            client, run, new_config, metrics, split, rows, args.overrides, command
        )
    except SourceError as err:
        print(f"error: {err} (store {uri})", file=sys.stderr)
        return 1
    except (ConfigError, RunError) as err:
        print(failure_message(err), file=sys.stderr)
        return 1
    except (ServerUnreachable, StoreError) as err:  # (RunErrors, named for the reader)
        print(f"error: {err}", file=sys.stderr)
        return 1
    shown = " ".join(f"{PREFIX}{k}={metric_text(PREFIX + k, v)}" for k, v in metrics.items())
    which = f"all {rows}" if split == "all" else f"{rows} {split}"
    print(f"run {run_id} ({run.info.run_name}) on {which} rows: {shown}")
    print(f"logged as run {logged}; see {run_page(uri, run.info.experiment_id, logged)}")
    return 0


def entry() -> int:
    """`main`, with a terminal's Ctrl-C ending it in one line (exit 130)."""
    from runner.training.signals import one_line_on_ctrl_c

    return one_line_on_ctrl_c(main, "interrupted: the evaluation stopped before its end")


if __name__ == "__main__":
    sys.exit(entry())
