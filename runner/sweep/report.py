"""Sweep reports rebuilt from MLflow alone: a comparison table per job, statistics per
config (runner.sweep.statistics: which differences are real), and a capacity plot.

Built from what the runs logged and nothing else, so the same report comes from the sweep's
end (`SweepCallback`), from `python -m runner.report` after a crashed launcher, and from a
remote tracking server.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient

from runner.errors import StoreError, did_you_mean
from runner.sweep import statistics as stats
from runner.sweep.statistics import Comparison, Sample
from runner.tracking import mlflow_internals, tags
from runner.tracking.naming import GROUP_PARAMS
from runner.tracking.store import failure_cause, not_there

STATUS_RANK = {"FINISHED": 0, "RUNNING": 1, "KILLED": 2, "FAILED": 3}


@dataclass
class Row:
    """One job of a sweep, as the report shows it."""

    run_id: str
    overrides: dict[str, str]
    params: int | None
    metric: str
    final_val: float | None
    best_val: float | None
    best_epoch: int | None
    final_train: float | None
    wall_seconds: float | None
    status: str
    error: str = ""
    label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    repeat: stats.Repeat = (None, None)  # its (seed, fold): what pairs it with other configs
    folds: int | None = None  # K of a K-fold run
    choices: str = ""  # its model, data and optim choices: the name of a config never swept
    history: list[tuple[int, float]] = field(default_factory=list)  # (epoch, metric) points
    config: dict[str, str] = field(default_factory=dict)  # its params and group choices


def parse_overrides(text: str) -> dict[str, str]:
    """`a=1 b=x` (the runner.overrides tag) as a dict."""
    pairs = [item.split("=", 1) for item in text.split() if "=" in item]
    return {key.lstrip("+~"): value for key, value in pairs}


def _better(metric: str) -> Any:
    return min if metric.endswith(("rmse", "mse", "mae", "loss")) else max


def within_range(bounds: tuple[float, float] | None, metric: str) -> tuple[float, float] | None:
    """An interval cut to the values the metric can take (an accuracy within 0 to 1,
    errors and losses from 0, R2 up to 1): a Student t interval of a mean near a bound
    reaches past it, and an accuracy interval up to 1.07 says nothing more than 1."""
    if bounds is None:
        return None
    low, high = bounds
    if metric.endswith("acc") or _better(metric) is min:
        low = max(low, 0.0)
    if metric.endswith(("acc", "r2")):
        high = min(high, 1.0)
    return low, high


Histories = Mapping[str, Mapping[str, list[Any]]]  # metric key -> run id -> its points


def reported_metric(run: Run) -> str:
    """The metric a run is compared by: its primary validation metric, or its test split's
    where it validated on nothing."""
    metric = run.data.tags.get(tags.PRIMARY_METRIC, "val_acc")
    held_out = metric.replace("val_", "test_", 1)
    if metric not in run.data.metrics and held_out in run.data.metrics:
        return held_out
    return metric


def _train_metric(metric: str) -> str:
    return "train_" + metric.split("_", 1)[1]


def read_histories(client: MlflowClient, runs: list[Run]) -> dict[str, dict[str, list[Any]]]:
    """The metric histories a report draws on, read in bulk (a query per metric, not a
    call per run): each run's compared metric, and the training metric of the runs that
    kept their best epoch."""
    wanted: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        metric = reported_metric(run)
        if metric in run.data.metrics:
            wanted[metric].append(run.info.run_id)
        if kept_best(run) and _train_metric(metric) in run.data.metrics:
            wanted[_train_metric(metric)].append(run.info.run_id)
    return {key: mlflow_internals.metric_histories(client, ids, key) for key, ids in wanted.items()}


def run_row(
    client: MlflowClient,
    run: Run,
    histories: Histories | None = None,
    overrides: str | None = None,
) -> Row:
    """Read one run's report row: final and best validation metric, capacity, status. A run
    that kept its best epoch's weights (trainer.keep=best) is final at that epoch.
    `histories`: read in bulk (read_histories), else each read here; `overrides`: the
    sweep's own for a run it reused (reused_overrides), else the run's."""
    run_tags, metrics = run.data.tags, run.data.metrics

    def points(key: str) -> list[Any]:
        if key not in metrics:
            return []
        if histories is not None:
            return list(histories.get(key, {}).get(run.info.run_id, []))
        return list(client.get_metric_history(run.info.run_id, key))

    metric = reported_metric(run)
    history = points(metric)
    best = _better(metric)(history, key=lambda m: m.value) if history else None
    train_metric = _train_metric(metric)
    # (a run continued now keeps its last end until it ends again: no wall time yet)
    end = run.info.end_time if run.info.status != "RUNNING" else None
    params = run.data.params.get("trainable_params")
    swept = parse_overrides(overrides or run_tags.get(tags.OVERRIDES, ""))
    config = {**run.data.params, **swept}  # (a value not overridden is the run's param)
    folds = config.get("data.folds")
    choices = (("model", tags.MODEL), ("data", tags.DATA), ("optim", tags.OPTIM))
    return Row(
        run_id=run.info.run_id,
        overrides=swept,
        params=int(params) if params else None,
        metric=metric,
        final_val=kept_value(run, history, metrics.get(metric)),
        best_val=best.value if best else None,
        # (the epoch the run kept, where it did: a tie goes to the lower validation loss)
        best_epoch=kept_epoch(run) or (best.step if best else None),
        final_train=kept_value(run, points(train_metric), metrics.get(train_metric))
        if kept_best(run)
        # fmt: skip
        else metrics.get(train_metric),
        # (less the time it spent ended between an interruption and its continuation)
        wall_seconds=(end - run.info.start_time) / 1000 - paused_seconds(run) if end else None,
        status=run.info.status,
        error=run_tags.get(tags.ERROR, "")
        or (run_tags.get(tags.STOPPED_BY, "") if run.info.status == "KILLED" else ""),
        repeat=(config.get("seed"), config.get("data.fold")),
        folds=int(folds) if folds and folds.isdigit() else None,
        choices=" ".join(f"{k}={run_tags[t]}" for k, t in choices if run_tags.get(t)),
        history=[(m.step, m.value) for m in history],
        config={**run.data.params, **{k: run_tags[t] for k, t in choices if run_tags.get(t)}},
    )


def kept_epoch(run: Run) -> int | None:
    """The epoch whose weights the run ended with, where it kept its best epoch's
    (trainer.keep), else None (its last)."""
    tag = run.data.tags.get(tags.KEPT_EPOCH)
    if tag is not None:
        return int(tag)
    best = run.data.metrics.get("best_epoch")  # (runs from before the tag)
    return int(best) if best is not None and run.data.params.get("trainer.keep") == "best" else None


def kept_best(run: Run) -> bool:
    """Whether the run ended with its best epoch's weights (trainer.keep)."""
    return kept_epoch(run) is not None


def kept_value(run: Run, history: list[Any], last: float | None) -> float | None:
    """The metric's value for the weights the run kept: at its kept epoch with
    trainer.keep=best (`history`: the metric's points), else its last value."""
    kept = kept_epoch(run)
    if kept is None:
        return last
    return next((m.value for m in history if m.step == kept), last)


def kept_metrics(client: MlflowClient, run: Run) -> dict[str, float]:
    """The run's metrics for the weights it kept: with trainer.keep=best each epoch's metric
    (train_*, val_*) at its best epoch (the test split's were the kept weights' already),
    else each metric's last value."""
    metrics = dict(run.data.metrics)
    if not kept_best(run):
        return metrics
    for key in metrics:
        if key.startswith(("train_", "val_")):
            history = client.get_metric_history(run.info.run_id, key)
            metrics[key] = kept_value(run, history, metrics[key])
    return metrics


def _job_order(run: Run) -> tuple[float, int]:
    """Sort key: the Hydra job number within its sweep, then start time."""
    job = run.data.tags.get(tags.SWEEP_JOB)
    return (int(job) if job and job.isdigit() else math.inf, run.info.start_time)


def _dedupe(runs: list[Run]) -> list[Run]:
    """One run per config fingerprint: a finished one over failed attempts, else the latest."""
    chosen: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        key = run.data.tags.get(tags.FINGERPRINT, run.info.run_id)
        old = chosen.get(key)
        if old is None or STATUS_RANK.get(run.info.status, 9) <= STATUS_RANK.get(
            old.info.status, 9
        ):
            chosen[key] = run
    return sorted(chosen.values(), key=_job_order)


def reused_overrides(parent: Run | None) -> dict[str, str]:
    """The sweep's own overrides of each job it reused an earlier command's FINISHED run
    for, by that run's id (a report labels the run as the sweep's job, not as made)."""
    if parent is None:
        return {}
    sweep_tags = parent.data.tags
    reused = {}
    for key, run_id in sweep_tags.items():
        if key.startswith(tags.REUSED_PREFIX):
            text = sweep_tags.get(tags.REUSED_AS_PREFIX + key.removeprefix(tags.REUSED_PREFIX))
            if text is not None:
                reused[run_id] = text
    return reused


def sweep_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """The sweep's jobs: its child runs plus finished runs it reused when resumed."""
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.{tags.PARENT_RUN_ID} = '{parent.info.run_id}'",
        max_results=10000,
    )
    reused = [
        client.get_run(run_id)
        for key, run_id in parent.data.tags.items()
        if key.startswith(tags.REUSED_PREFIX)
    ]
    return _dedupe(list(children) + reused)


def paused_seconds(run: Run) -> float:
    """How long a continued run spent ended before it went on (tags.PAUSED)."""
    try:
        return float(run.data.tags.get(tags.PAUSED, 0))
    except ValueError:
        return 0.0


def experiments_hint(client: MlflowClient, name: str) -> str:
    """What a mistyped experiment name may mean: ` Did you mean 'xor'? Experiments: ...`."""
    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
    return f"{did_you_mean(name, names)} Experiments: {', '.join(names) or 'none'}"


def experiment_runs(client: MlflowClient, name: str) -> list[Run]:
    """Every training run of an experiment (sweep parents and evaluations left out)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise LookupError(f"no experiment or run named {name!r}.{experiments_hint(client, name)}")
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    return _dedupe(
        [
            r for r in runs
            if r.data.tags.get(tags.IS_SWEEP) != "true" and tags.EVALUATES not in r.data.tags
        ]
    )  # fmt: skip


def resolve_target(client: MlflowClient, target: str) -> tuple[list[Run], str, Run | None]:
    """A sweep parent run id, or an experiment name, to its runs and a title; a StoreError
    says why the store could not tell (down, the login refused)."""
    try:
        parent = client.get_run(target)
    except Exception as err:
        if not not_there(err):
            raise StoreError(
                f"cannot look up {target!r} in the MLflow store {client.tracking_uri}: "
                f"{failure_cause(err)}"
            ) from err
        parent = None  # not a run id: try it as an experiment name
    if parent is not None:
        if parent.data.tags.get(tags.IS_SWEEP) == "true":
            return sweep_runs(client, parent), parent.info.run_name, parent
        return [parent], f"run {parent.info.run_name}", None
    return experiment_runs(client, target), f"experiment {target}", None


def _same_value(value: str) -> str:
    """A config value as every run spells it (a sweep job logs `False`, a command `false`)."""
    return value.lower() if value.lower() in ("true", "false", "none", "null") else value


def label_rows(rows: list[Row]) -> list[str]:
    """Give each row a label made of the overrides that differ across rows; return those keys.
    A row not given a key another row was given (a single run among a sweep's jobs, in an
    experiment's report) takes its own value of it (its config), so the same config reads
    the same whoever launched it."""
    keys = sorted({k for row in rows for k in row.overrides})
    for row in rows:
        for key in keys:
            value = row.overrides.get(key)
            if value is None:  # (a config group's choice: its tag, else the name it set)
                value = row.config.get(key, row.config.get(GROUP_PARAMS.get(key, key)))
            if value is not None:
                row.overrides[key] = _same_value(str(value))
    varying = [k for k in keys if len({row.overrides.get(k) for row in rows}) > 1]
    for row in rows:
        row.label = " ".join(f"{k}={row.overrides.get(k, '-')}" for k in varying) or "(run)"
    return varying


def _fmt(value: float | None, digits: int = 4) -> str:
    """A metric cell: blank when missing, inf for overflow (MLflow stores inf as 1.8e308)."""
    if value is None or math.isnan(value):
        return ""
    if abs(value) > 1e300:
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}" if abs(value) >= 1e6 else f"{value:.{digits}f}"


def compared_metric(rows: list[Row]) -> str:
    """The metric the rows are compared by: the validation metric most of them report (a
    run without validation rows reports its test split's, which is not comparable)."""
    names = [r.metric for r in rows if r.final_val is not None] or [r.metric for r in rows]
    if not names:
        return "val_acc"
    validated = [n for n in names if n.startswith("val_")] or names
    return max(sorted(set(validated)), key=validated.count)


def table(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-job comparison table (a row whose run reports another
    metric shows its name beside each value)."""
    metric = compared_metric(rows)
    header = ["job", "params", f"final {metric}", f"best {metric}", "best epoch"]
    header += [f"final train_{metric.split('_', 1)[1]}", "wall s", "status", "error"]
    cells = [
        [
            r.label,
            "" if r.params is None else str(r.params),
            _fmt(r.final_val) + ("" if r.metric == metric else f" ({r.metric})"),
            _fmt(r.best_val) + ("" if r.metric == metric else f" ({r.metric})"),
            "" if r.best_epoch is None else str(r.best_epoch),
            _fmt(r.final_train),
            _fmt(r.wall_seconds, 1),
            r.status,
            r.error.splitlines()[0][:120] if r.error else "",
        ]
        for r in rows
    ]
    return header, cells


REPEAT_KEYS = ("seed", "data.fold")  # repeats of one config: seeds, cross-validation folds


def seed_groups(rows: list[Row]) -> dict[str, list[Row]]:
    """Rows grouped by their overrides without seed and fold (one group per config)."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        key = " ".join(f"{k}={v}" for k, v in sorted(row.overrides.items()) if k not in REPEAT_KEYS)
        groups[key].append(row)
    return groups


REPEAT_PREFIXES = tuple(f"{key}=" for key in REPEAT_KEYS)


@dataclass
class ConfigStats:
    """One config over its seeds and folds: its sample, interval, and test against the best."""

    label: str
    params: int | None
    sample: Sample
    interval: tuple[float, float] | None
    comparison: Comparison | None  # against the best (None: it is the best, or has no runs)
    best: bool = False

    @property
    def tied(self) -> bool | None:
        """Whether it cannot be told apart from the best (the best is; None: untested)."""
        if self.best:
            return True
        return stats.tied(self.comparison) if self.comparison else None


def config_label(group: list[Row]) -> str:
    """A config's name: its swept overrides but seed and fold, else its model, data and
    optim choices (a seed-only sweep's one config)."""
    label = " ".join(p for p in group[0].label.split() if not p.startswith(REPEAT_PREFIXES))
    return label or group[0].choices or "(run)"


def config_stats(rows: list[Row]) -> list[ConfigStats]:
    """Per config (in job order), the compared metric's final values of its finished runs,
    their 95% interval, and the test against the best config by mean."""
    metric = compared_metric(rows)
    samples: dict[str, Sample] = {}
    params: dict[str, int | None] = {}
    for group in seed_groups(rows).values():
        label = config_label(group)
        values: dict[stats.Repeat, float] = {}
        for r in group:
            if r.status != "FINISHED" or r.final_val is None or r.metric != metric:
                continue
            if not abs(r.final_val) < 1e300:  # diverged (MLflow stores inf as 1.8e308)
                continue
            key = r.repeat if r.repeat not in values else (f"{r.repeat[0]}#{r.run_id}", r.repeat[1])
            values[key] = r.final_val
        folds = next((r.folds for r in group if r.folds), None)
        samples[label], params[label] = Sample(values, folds), group[0].params
    order = stats.ordered(samples, lower_is_better=_better(metric) is min)
    best = order[0] if order else None
    return [
        ConfigStats(
            label=label,
            params=params[label],
            sample=sample,
            interval=within_range(stats.interval(sample), metric),
            comparison=stats.compare(samples[best], sample)
            if best is not None and label != best and sample.n
            else None,
            best=label == best,
        )
        for label, sample in samples.items()
    ]


def ranked_configs(configs: list[ConfigStats], metric: str) -> list[ConfigStats]:
    """The configs with runs, best first by mean (statistics.ordered)."""
    by_label = {c.label: c for c in configs}
    order = stats.ordered({c.label: c.sample for c in configs}, _better(metric) is min)
    return [by_label[label] for label in order]


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _interval_cell(config: ConfigStats) -> str:
    if config.sample.n == 1:
        return "1 seed: no interval"
    if config.interval is None:
        return ""
    low, high = config.interval
    return f"{_fmt(low)} to {_fmt(high)}"


def aggregate_table(
    rows: list[Row], configs: list[ConfigStats] | None = None
) -> tuple[list[str], list[list[str]]] | None:
    """Per config: runs, mean, std, the 95% interval of the mean, and the test against the
    best config (None with a single row); `configs`: config_stats(rows), if made already."""
    if len(rows) < 2:
        return None
    metric = compared_metric(rows)
    header = ["config", "params", "runs", f"final {metric} mean", "std", "95% CI of the mean"]
    header += ["p vs best", "tied with best"]
    cells = []
    configs = config_stats(rows) if configs is None else configs
    alone = len([c for c in configs if c.sample.n]) == 1
    for config in configs:
        sample, tied = config.sample, config.tied
        cells.append(
            [
                config.label,
                "" if config.params is None else str(config.params),
                str(sample.n),
                _fmt(sample.mean) if sample.n else "",
                _fmt(sample.std),
                _interval_cell(config),
                ("" if alone else "best")
                if config.best
                else _fmt_p(config.comparison and config.comparison.p),
                "" if tied is None or config.best else ("yes" if tied else "no"),
            ]
        )
    return header, cells


def verdict(rows: list[Row], configs: list[ConfigStats] | None = None) -> list[str]:
    """The report's closing lines: the best config and the configs it cannot be told apart
    from (with the test used), and about how many seeds the two best configs would need."""
    configs = [c for c in (config_stats(rows) if configs is None else configs) if c.sample.n]
    best = next((c for c in configs if c.best), None)
    if best is None:
        return []
    metric = compared_metric(rows)
    alone = len(configs) == 1  # (a seed-only sweep: nothing to be best against)
    line = f"{'one config: ' if alone else 'best: '}{best.label}, mean {metric} "
    line += _fmt(best.sample.mean)
    if best.interval:
        low, high = best.interval
        line += f" (95% CI {_fmt(low)} to {_fmt(high)}, {best.sample.n} runs)"
    else:
        line += " (1 seed: no interval)"
    others = [c for c in configs if not c.best]
    tested = [c for c in others if c.comparison and c.comparison.p is not None]
    if others and not tested:
        line += "; the others cannot be tested against it (add seeds: 2 or more per config)"
    elif tested:
        used = ", ".join(sorted({c.comparison.test for c in tested}))
        ties = [c.label for c in tested if c.tied]
        if ties:
            line += f"; cannot be told apart from it (p >= {stats.ALPHA}, {used}): "
            line += ", ".join(ties)
        else:
            line += f"; every other config differs from it (p < {stats.ALPHA}, {used})"
    lines = [line]
    ranked = ranked_configs(configs, metric)
    if len(ranked) >= 2:
        first, second = ranked[0], ranked[1]
        needed = stats.seeds_needed(first.sample, second.sample)
        if needed is not None:
            gap = abs(first.sample.mean - second.sample.mean)
            many = (
                f"more than {stats.MOST_SEEDS:,}"
                if needed > stats.MOST_SEEDS
                else f"about {needed}"
            )
            lines.append(
                f"seeds: {first.label} and {second.label} differ by {_fmt(gap)} in mean {metric}; "
                f"{many} seeds per config would tell that difference apart at "
                f"{stats.POWER:.0%} power (they ran {first.sample.n} and {second.sample.n})"
            )
    return lines


CONFIG_COLUMNS = ["config", "n", "mean", "std", "ci95_low", "ci95_high", "p_vs_best"]
CONFIG_COLUMNS += ["tied_with_best", "test", "params"]


def configs_csv(rows: list[Row], configs: list[ConfigStats] | None = None) -> str:
    """report/configs.csv: one row per config (the best's p_vs_best is empty, its
    tied_with_best True; a config with fewer than 2 runs has no interval and no test)."""

    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.10g}"

    cells = []
    for config in config_stats(rows) if configs is None else configs:
        low, high = config.interval or (None, None)
        comparison, tied = config.comparison, config.tied
        cells.append(
            [
                config.label,
                str(config.sample.n),
                number(config.sample.mean if config.sample.n else None),
                number(config.sample.std),
                number(low),
                number(high),
                number(comparison.p if comparison else None),
                "" if tied is None else str(tied),
                comparison.test if comparison and comparison.p is not None else "",
                "" if config.params is None else str(config.params),
            ]
        )
    return to_csv(CONFIG_COLUMNS, cells)


def markdown(header: list[str], cells: list[list[str]]) -> str:
    """A GitHub-style Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def text_table(header: list[str], cells: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(x) for x in col) for col in zip(header, *cells, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def to_csv(header: list[str], cells: list[list[str]]) -> str:
    """The table as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(cells)
    return buffer.getvalue()


def config_of(rows: list[Row]) -> dict[str, str]:
    """Each row's config label (config_label), by run id."""
    return {r.run_id: config_label(group) for group in seed_groups(rows).values() for r in group}


def capacity_plot(
    rows: list[Row], varying: list[str], configs: list[ConfigStats] | None = None
) -> Any:
    """Validation (solid) and train (dashed) metric against trainable parameters, one series
    per value of the swept keys that are not the model's; error bars: the 95% interval of
    the mean over seeds; the best config (by mean) starred, those tied with it ringed."""
    from runner.tracking import plots  # imports matplotlib: only when a report is drawn

    configs = config_stats(rows) if configs is None else configs
    label_of, by_label = config_of(rows), {c.label: c for c in configs}
    series_keys = [k for k in varying if not k.startswith("model") and k not in REPEAT_KEYS]
    val: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    train: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    best: plots.Point | None = None
    tied: set[plots.Point] = set()
    metric = compared_metric(rows)
    for row in rows:
        if row.params is None or row.final_val is None or abs(row.final_val) > 1e300:
            continue
        if row.metric != metric:  # (a test score is not drawn among validation scores)
            continue
        name = " ".join(f"{k}={row.overrides.get(k, '-')}" for k in series_keys)
        val[name][row.params].append(row.final_val)
        if row.final_train is not None and abs(row.final_train) < 1e300:
            train[name][row.params].append(row.final_train)
        config = by_label.get(label_of.get(row.run_id, ""))
        if config is not None and config.best:
            best = (name, row.params)
        elif config is not None and config.tied:
            tied.add((name, row.params))
    intervals = {
        (name, x): bounds
        for name, points in val.items()
        for x, values in points.items()
        if (bounds := within_range(stats.values_interval(values), metric))
    }
    ids = [row.run_id[:8] for row in rows]
    shown = ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
    caption = f"{len(rows)} runs: {shown}" if rows else ""
    return plots.capacity(
        val, train, metric, intervals=intervals, best=best, tied=sorted(tied), caption=caption
    )


MOST_CURVES = 8


def curves_plot(rows: list[Row], configs: list[ConfigStats]) -> Any:
    """The compared metric per epoch, a line per config (at most MOST_CURVES, the best
    first): the mean over its finished runs, with the 95% interval of that mean as a band."""
    from runner.tracking import plots

    metric = compared_metric(rows)
    ranked = [c.label for c in ranked_configs(configs, metric)]
    drawn = set(ranked[:MOST_CURVES])
    by_epoch: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    drawn_runs = 0
    for group in seed_groups(rows).values():
        label = config_label(group)
        if label not in drawn:
            continue
        for row in group:
            if row.status != "FINISHED" or row.metric != metric:
                continue
            drawn_runs += bool(row.history)
            for epoch, value in row.history:
                if abs(value) < 1e300:
                    by_epoch[label][epoch].append(value)
    bands: dict[str, plots.Band] = {}
    for label in ranked[:MOST_CURVES]:
        epochs = sorted(by_epoch[label])
        if not epochs:
            continue
        means = [statistics.fmean(by_epoch[label][e]) for e in epochs]
        bounds = [within_range(stats.values_interval(by_epoch[label][e]), metric) for e in epochs]
        lows = [b[0] if b else m for b, m in zip(bounds, means, strict=True)]
        highs = [b[1] if b else m for b, m in zip(bounds, means, strict=True)]
        bands[label] = (epochs, means, lows, highs)
    left = len(ranked) - len(bands)
    caption = f"{_count(drawn_runs, 'finished run')}, {_count(len(ranked), 'config')}" + (
        f" ({left} not drawn: the {MOST_CURVES} best are)" if left > 0 else ""
    )
    return plots.curves(bands, metric, caption=caption)


def seeds_plot(rows: list[Row], config: ConfigStats) -> Any:
    """A single config's final metric per seed (a seed-only sweep), with its interval."""
    from runner.tracking import plots

    metric = compared_metric(rows)
    values = {
        f"{seed}" if fold is None else f"{seed}/{fold}": value
        for (seed, fold), value in sorted(
            config.sample.values.items(), key=lambda item: _seed_order(item[0])
        )
    }
    title = f"{config.label}: final {plots.metric_name(metric)} over {config.sample.n} runs"
    caption = _count(config.sample.n, "finished run")
    if len(rows) > config.sample.n:
        caption += f" ({_count(len(rows) - config.sample.n, 'other run')} in the report not drawn)"
    return plots.strip(values, metric, interval=config.interval, title=title, caption=caption)


def _seed_order(repeat: stats.Repeat) -> tuple[float, str, str]:
    seed, fold = (str(part) for part in repeat)
    return (float(seed) if seed.lstrip("-").isdigit() else math.inf, seed, fold)


def report_figures(
    rows: list[Row], varying: list[str], configs: list[ConfigStats] | None = None
) -> dict[str, Any]:
    """The report's figures by file name: capacity.png (several configs) or seeds.png (a
    single config over seeds), and curves.png where runs logged their metric per epoch."""
    configs = config_stats(rows) if configs is None else configs
    figures: dict[str, Any] = {}
    measured = [c for c in configs if c.sample.n]
    if len(measured) == 1 and measured[0].sample.n > 1:
        figures["seeds.png"] = seeds_plot(rows, measured[0])
    else:
        figures["capacity.png"] = capacity_plot(rows, varying, configs)
    if any(r.history for r in rows):
        figures["curves.png"] = curves_plot(rows, configs)
    return figures


@dataclass
class Report:
    """A built report: rows, the tables as text, and its figures by file name."""

    rows: list[Row]
    text: str
    markdown: str
    csv: str
    figures: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    configs_csv: str = ""
    summary: str = ""  # Markdown: the per-config table and the verdict (no per-job rows)
    verdict: list[str] = field(default_factory=list)


def build_report(
    client: MlflowClient, runs: list[Run], title: str, parent: Run | None = None
) -> Report:
    """Rows, tables and plots for `runs` (of the sweep `parent`, if given)."""
    histories = read_histories(client, runs)
    reused = reused_overrides(parent)
    rows = [run_row(client, run, histories, reused.get(run.info.run_id)) for run in runs]
    varying = label_rows(rows)
    header, cells = table(rows)
    text = f"{title}\n{text_table(header, cells)}"
    md = f"# {title}\n\n{markdown(header, cells)}"
    configs = config_stats(rows)
    agg = aggregate_table(rows, configs)
    summary = ""
    if agg:
        text += "\n\nper config, over seeds and folds:\n" + text_table(*agg)
        summary += "\n## Per config, over seeds and folds\n\n" + markdown(*agg)
    closing = verdict(rows, configs)
    if closing:
        text += "\n\n" + "\n".join(closing)
        summary += "\n" + "\n\n".join(closing) + "\n"
    md += summary
    if reused:
        made = {run.info.run_id: run for run in runs if run.info.run_id in reused}
        lines = [
            f"  {row.label} <- run {made[row.run_id].info.run_name} ({row.run_id}), made by "
            f"`{made[row.run_id].data.tags.get(tags.SOURCE_NAME, '?')}`"
            for row in rows
            if row.run_id in made
        ]
        said = f"{_count(len(lines), 'job')} reused a FINISHED run of the same config"
        text += f"\n\n{said} (sweep.skip_finished=false retrains):\n" + "\n".join(lines)
        md += f"\n{said}:\n\n" + "\n".join(f"- {line.strip()}" for line in lines) + "\n"
    failed = [r for r in rows if r.status != "FINISHED"]
    if failed:
        text += f"\n\n{len(failed)} of {len(rows)} jobs did not finish:"
        text += "".join(f"\n  {r.label}: {r.status} {r.error}".rstrip() for r in failed)
    figures = report_figures(rows, varying, configs)
    return Report(
        rows, text, md, to_csv(header, cells), figures, list(runs), configs_csv(rows, configs),
        closing, summary,
    )  # fmt: skip


NOTE_LIMIT = 8000  # characters MLflow keeps of a tag's value (it cuts the rest, warning)


def log_report(client: MlflowClient, run_id: str, report: Report) -> Run | None:
    """Attach the report to the sweep's parent run: CSVs, Markdown and plots as artifacts;
    the params all finished jobs share, the best job's final metrics, and the comparison as
    its description, so the parent reads like a run in the UI. Returns the best job's run
    (None if no job finished)."""
    client.log_text(run_id, report.csv, "report/comparison.csv")
    client.log_text(run_id, report.markdown, "report/comparison.md")
    client.log_text(run_id, report.configs_csv, "report/configs.csv")
    for name, figure in report.figures.items():
        client.log_figure(run_id, figure, f"report/{name}")
    finished = [run for run in report.runs if run.info.status == "FINISHED"]
    best = best_run(report.rows, finished)
    note = report.markdown.split("\n", 2)[2]  # without its title: the run's name says it
    if best is not None:
        row = next(r for r in report.rows if r.run_id == best.info.run_id)
        note = (
            f"Best: **{best.info.run_name}** ({row.label}), final {row.metric} "
            f"{_fmt(row.final_val)}, run `{best.info.run_id}`.\n\n{note}"
        )
        client.set_tag(run_id, tags.BEST_RUN, best.info.run_id)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in kept_metrics(client, best).items()]
        client.log_batch(run_id, metrics=metrics)
    if len(note) > NOTE_LIMIT:  # (many jobs) the per-config summary, the rows in the artifact
        head = note.split("\n\n", 1)[0] if best is not None else ""
        rows = f"The {len(report.rows)} jobs, one row each: `report/comparison.md`."
        note = "\n\n".join(part for part in (head, rows, report.summary.strip()) if part)
        note = note[:NOTE_LIMIT]
    client.set_tag(run_id, tags.NOTE, note)
    params = [Param(k, v) for k, v in shared_params(finished).items()]
    for i in range(0, len(params), 100):  # MLflow's batch limit for params
        client.log_batch(run_id, params=params[i : i + 100])
    return best


def best_run(rows: list[Row], finished: list[Run]) -> Run | None:
    """The finished run with the best final primary metric, among the runs that report the
    metric most of them are compared by (never a test score against a validation score)."""
    by_id = {run.info.run_id: run for run in finished}
    scored = [r for r in rows if r.run_id in by_id and r.final_val is not None]
    metric = compared_metric(scored)
    scored = [r for r in scored if r.metric == metric]
    if not scored:
        return None
    best = _better(metric)(scored, key=lambda r: r.final_val)
    return by_id[best.run_id]


def shared_params(runs: list[Run]) -> dict[str, str]:
    """The params every run has with the same value: what the sweep held fixed."""
    if not runs:
        return {}
    first, *others = (run.data.params for run in runs)
    return {k: v for k, v in first.items() if all(p.get(k) == v for p in others)}
