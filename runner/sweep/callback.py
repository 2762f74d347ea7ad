"""A multirun is one thing in MLflow: a parent run made before any job starts, every job a
child of it (whatever the launcher), and a comparison report when the sweep ends.

`SweepCallback` (named in conf/config.yaml) runs in the launching process: it creates the
store, the experiment and the parent run once (parallel jobs would race to) and leaves
their ids for the jobs (runner.config.launch). The job side: `finished_run` lets a re-run sweep
skip what already finished, `record_failed_setup` gives a job with a bad config its FAILED
child run.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.config.launch import SweepInfo, write_sweep
from runner.errors import ConfigError, Refused, RunError, ending
from runner.tracking import tags
from runner.tracking.fingerprint import sweep_fingerprint
from runner.tracking.naming import command
from runner.training import signals, sweep_signals

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


log = logging.getLogger("runner.sweep")


def _tracking_target(config: DictConfig) -> tuple[str, str | None, str]:
    """Tracking URI, artifact root (embedded store only) and experiment, from the config."""
    from hydra.core.hydra_config import HydraConfig

    from runner.config.spec import TrackingSpec
    from runner.tracking import store_location

    # Before any job, `${hydra:...}` interpolations need the sweep's config installed.
    HydraConfig.instance().set_config(config)
    tracking = OmegaConf.to_container(config.tracking, resolve=True)
    experiment = str(tracking.get("experiment") or "runner")
    spec = TrackingSpec(
        uri=tracking.get("uri"), store_dir=tracking["store_dir"], experiment=experiment
    )
    return *store_location(spec), experiment


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: overrides with sweep syntax (`a,b`, `range(..)`) on the
    command line or in the sweeper's `params`; they name its jobs' runs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [str(o) for o in config.hydra.overrides.task]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    given += [f"{key}={value}" for key, value in params.items()]
    parser = OverridesParser.create()
    keys: list[str] = []
    for text in given:
        try:
            (override,) = parser.parse_overrides([text])
        except Exception:  # the sweeper reports its own syntax errors
            continue
        if override.is_sweep_override() and override.key_or_group not in keys:
            keys.append(override.key_or_group)
    return keys


def _print_failure(what: str, err: BaseException) -> None:
    """One line on stderr for a failure of the sweep's own work (HYDRA_FULL_ERROR=1: the
    traceback too); a callback's exception would only be a warning from Hydra."""
    if os.environ.get("HYDRA_FULL_ERROR"):
        import traceback

        traceback.print_exception(type(err), err, err.__traceback__)
    if isinstance(err, ConfigError | RunError):
        reason = str(err)
    else:
        lines = str(err).strip().splitlines()
        reason = f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__
    print(f"error: {what}: {reason}", file=sys.stderr, flush=True)


CLAIM_SETTLE_SECONDS = 0.3  # two launches reopening one sweep at once: the last claim wins


class SweepTaken(Refused):
    """Another launch runs this sweep: this one stops before any job."""


def _refuse_if_live(client: MlflowClient, experiment_id: str, parent: Run, uri: str) -> None:
    """A re-launch of a sweep that another launch still runs (its launcher or any job alive)
    is refused: its jobs would be trained twice. Jobs left RUNNING by dead processes are
    ended KILLED (their checkpoints continue)."""
    from runner.tracking.store import end_if_dead, still_running

    run_id = parent.info.run_id
    if parent.info.status == "RUNNING" and not end_if_dead(client, parent):
        raise SweepTaken(
            f"this sweep is already running: sweep run {run_id} "
            f"{still_running(parent, uri)}; the same command then continues it"
        )
    jobs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{tags.PARENT_RUN_ID} = '{run_id}' and attributes.status = 'RUNNING'",
        max_results=10000,
    )
    for job in jobs:
        if not end_if_dead(client, job):
            raise SweepTaken(
                f"a job of this sweep is still training: run {job.info.run_id} "
                f"{still_running(job, uri)}; the same command then continues the sweep"
            )
        log.info("run %s was left RUNNING by an interrupted sweep: ended KILLED", job.info.run_id)


def _claim(client: MlflowClient, run_id: str, owner: dict[str, str], uri: str) -> None:
    """After reopening a sweep run: if another launch reopened it at the same moment, the
    one whose claim landed last goes on, the other stops before any job."""
    time.sleep(CLAIM_SETTLE_SECONDS)
    run = client.get_run(run_id)
    if (
        run.data.tags.get(tags.PID) != owner[tags.PID]
        or run.data.tags.get(tags.HOST) != owner[tags.HOST]
    ):
        raise _just_started(run, uri)


def _first_of_twins(client: MlflowClient, experiment_id: str, run: Run, uri: str) -> None:
    """Two launches of one new sweep at the same moment each made a parent run: the earlier
    (by start time, then id) goes on; the later deletes its own and stops before any job."""
    from runner.tracking.store import may_be_alive

    key = run.data.tags[tags.SWEEP_FINGERPRINT]
    twins = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{tags.SWEEP_FINGERPRINT}` = '{key}' "
        "and attributes.status = 'RUNNING'",
        max_results=100,
    )
    mine = (run.info.start_time, run.info.run_id)
    for twin in twins:
        if (twin.info.start_time, twin.info.run_id) < mine and may_be_alive(twin):
            client.delete_run(run.info.run_id)
            raise _just_started(twin, uri)


def _just_started(owner: Run, uri: str) -> SweepTaken:
    """The refusal of a launch that lost the race for a sweep run to `owner`'s launch."""
    from runner.tracking.store import still_running

    return SweepTaken(
        f"this sweep was just started by another launch: sweep run {owner.info.run_id} "
        f"{still_running(owner, uri)}; the same command then continues it"
    )


class SweepCallback(Callback):
    """Hydra callback: the sweep's parent run, before the jobs and after them."""

    def __init__(self) -> None:
        self.info: SweepInfo | None = None
        self.running = False  # the parent run is open: on_multirun_end has not ended it
        self.started = 0.0
        self.command = "python -m runner -m"  # the sweep's command line, to run it again
        self.resumed = False  # the parent run is an earlier launch's, reopened
        self.sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create (or, for a re-run of the same command, reopen) the parent run; if that
        fails, stop the sweep before any job runs. From here on, Ctrl-C (or SIGTERM) stops
        the jobs after their epoch and starts no new one (runner.training.signals)."""
        self.command = command(sys.argv[1:])  # what the user typed, launcher choice included
        sweep_signals.watch_sweep(Path(config.hydra.sweep.dir).resolve())
        # joblib's workers are ended at once when the sweep is over; the semaphores a
        # progress bar made there are the OS's to free, not worth the warning Python's
        # resource tracker prints for them after the sweep's last line.
        os.environ["PYTHONWARNINGS"] = ",".join(
            filter(None, [os.environ.get("PYTHONWARNINGS"), "ignore:resource_tracker:UserWarning"])
        )
        try:
            self._start(config)
        except Exception as err:
            self.info = None
            _print_failure("the sweep could not start", err)
            with contextlib.suppress(OSError):  # its folder, made for it, if still empty
                os.rmdir(config.hydra.sweep.dir)
            # Hydra turns a callback's exception into a warning and launches the jobs anyway,
            # ungrouped; an exit stops it here.
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        """Open the store, make or reopen the parent run, and leave its ids for the jobs."""
        from runner.tracking import quiet_third_party_logs
        from runner.tracking.store import open_store

        quiet_third_party_logs()
        uri, artifact_root, experiment = _tracking_target(config)
        client, experiment_id = open_store(uri, experiment, artifact_root)
        overrides = sorted(str(o) for o in config.hydra.overrides.task)
        key = sweep_fingerprint(experiment, overrides)
        previous = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{tags.SWEEP_FINGERPRINT}` = '{key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        sweep_dir = self.sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        swept = swept_keys(config)
        owner = {tags.HOST: socket.gethostname(), tags.PID: str(os.getpid())}
        run_id = None
        try:
            self.resumed = bool(previous)
            if previous:
                _refuse_if_live(client, experiment_id, previous[0], uri)
                run_id = previous[0].info.run_id
                client.update_run(run_id, status="RUNNING")
                for name, value in {**owner, tags.SWEEP: sweep_dir}.items():
                    client.set_tag(run_id, name, value)
                _claim(client, run_id, owner, uri)
                log.info("resuming sweep run %s: finished jobs will be skipped", run_id)
            else:
                parent_tags = {
                    tags.IS_SWEEP: "true",
                    tags.SWEEP_FINGERPRINT: key,
                    tags.SWEEP: sweep_dir,
                    tags.OVERRIDES: " ".join(overrides) or "(none)",
                    tags.SOURCE_NAME: command(["-m", *overrides]),
                    tags.SOURCE_TYPE: "LOCAL",
                    tags.USER: getpass.getuser(),
                    **owner,
                }
                # (when first: two sweeps of the same keys differ in the UI's first 20 characters)
                varied = " × ".join(swept)
                name = f"sweep {time.strftime('%m-%d %H:%M:%S')} {varied}".strip()
                run = client.create_run(experiment_id, run_name=name, tags=parent_tags)
                run_id = run.info.run_id
                _first_of_twins(client, experiment_id, run, uri)
            info = SweepInfo(uri, experiment_id, run_id, swept)
            write_sweep(sweep_dir, info)
        except BaseException as err:
            # No job will run under it: it does not stay RUNNING (unless another launch has it).
            if run_id is not None and not isinstance(err, SweepTaken):
                try:
                    client.set_terminated(run_id, status=ending(err)[0])
                except Exception:
                    log.exception("could not end the sweep run %s", run_id)
            raise
        self.info, self.running = info, True
        self.started = time.time()
        atexit.register(self._end_if_interrupted)
        log.info("sweep run %s in experiment %r (%s)", run_id, experiment, uri)

    def _end_if_interrupted(self) -> None:
        """At exit, if the sweep never reached its end (Ctrl-C, a launcher's error): its
        parent run ends KILLED, not RUNNING (the same command resumes it)."""
        if self.info is None or not self.running:
            return
        self._end_interrupted(signals.interrupted())

    def _end_interrupted(self, signum: int | None) -> None:
        """End the parent run KILLED and say, in one line, what the jobs became and the
        command that continues the sweep. A sweep stopped by an error before any job ran
        (Hydra refusing a job's overrides) leaves no run: its error says it all."""
        from mlflow.tracking import MlflowClient

        assert self.info is not None
        uri, run_id = self.info.tracking_uri, self.info.parent_run_id
        self.running = False
        what = f"interrupted by {signals.signal_name(signum)}" if signum else "stopped"
        try:
            client = MlflowClient(uri)
            counts = self._job_counts(client)
            if signum is None and not counts and not self.resumed:
                client.delete_run(run_id)
                return
            client.set_terminated(run_id, status="KILLED")
        except Exception as err:
            _print_failure(f"the sweep run {run_id} could not be ended KILLED", err)
            return
        print(
            f"sweep {what}{counts}: sweep run {run_id} ended KILLED; the same command "
            f"continues it, skipping finished jobs: {self.command}",
            file=sys.stderr, flush=True,
        )  # fmt: skip

    def _job_counts(self, client: MlflowClient) -> str:
        """How the sweep's jobs stand, as ' (2 FINISHED, 2 KILLED)'."""
        assert self.info is not None
        runs = client.search_runs(
            [self.info.experiment_id],
            filter_string=f"tags.{tags.PARENT_RUN_ID} = '{self.info.parent_run_id}'",
            max_results=10000,
        )
        counts: dict[str, int] = {}
        for run in runs:
            counts[run.info.status] = counts.get(run.info.status, 0) + 1
        return f" ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})" if counts else ""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report the sweep, end the parent run, and exit non-zero if any job failed or the
        report could not be made (the runs are kept either way)."""
        if self.info is None:
            return
        signum = sweep_signals.sweep_interrupted(self.sweep_dir)
        if signum is not None:  # every job has returned: stopped, or never started
            self._end_interrupted(signum)
            sys.exit(128 + signum)
        from mlflow.tracking import MlflowClient

        from runner.sweep.report import build_report, log_report, sweep_runs
        from runner.tracking import run_page, runs_table
        from runner.tracking.runs_view import write_view

        uri, run_id = self.info.tracking_uri, self.info.parent_run_id
        client = None
        failed = True
        try:
            client = MlflowClient(uri)
            parent = client.get_run(run_id)
            runs = sweep_runs(client, parent)
            if runs:
                report = build_report(client, runs, parent.info.run_name, parent)
                print(report.text, flush=True)
                best = log_report(client, run_id, report)
                write_view(client, self.info.experiment_id)  # (the runs table's columns)
                failed = any(r.status != "FINISHED" for r in report.rows)
                name = OmegaConf.select(config, "sweep.register")
                if name:
                    failed = not register_best(uri, parent, report, best, name) or failed
            else:
                print("sweep ended with no runs", flush=True)
        except Exception as err:
            _print_failure(
                f"the sweep's report failed (its runs are kept; `python -m runner.report "
                f"{run_id}` rebuilds it)",
                err,
            )
        finally:
            self.running = False
            status = "FAILED" if failed else "FINISHED"
            try:
                (client or MlflowClient(uri)).set_terminated(run_id, status=status)
                page = run_page(uri, self.info.experiment_id, run_id)
                table = runs_table(uri, self.info.experiment_id)
                jobs = f"; its jobs side by side: {table}" if table else ""
                log.info("sweep run %s ended %s; see %s%s", run_id, status, page, jobs)
            except Exception as err:
                _print_failure(f"the sweep run {run_id} could not be ended {status}", err)
        sweep_signals.unwatch_sweep()
        if failed:
            sys.exit(1)  # Hydra turns callback exceptions into warnings; an exit still counts


def register_best(uri: str, parent: Any, report: Any, best: Any, name: str) -> bool:
    """`sweep.register`: the best job's model (the report's) as a new version of `name`
    (alias champion); False, said in one line, if there is no best job or the store
    refused."""
    from runner.tracking.model_registry import RegistryRefused, register

    if best is None:
        print(f"sweep.register: no job finished, so no model joins {name!r}", flush=True)
        return False
    row = next(r for r in report.rows if r.run_id == best.info.run_id)
    value = "?" if row.final_val is None else f"{row.final_val:.6g}"
    description = (
        f"The best job of sweep {parent.info.run_name} (run {parent.info.run_id}) by final "
        f"{row.metric} = {value}: run {best.info.run_id} ({row.label})."
    )
    try:
        version = register(uri, best.info.run_id, name, description)
    except RegistryRefused as err:
        print(f"error: {err}", flush=True)
        return False
    print(f"registered {name!r} version {version} (models:/{name}@champion): {description}")
    return True
