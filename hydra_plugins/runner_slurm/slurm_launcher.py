"""`hydra/launcher=slurm`: submitit's Slurm launcher, except that

- a job Slurm cancelled (`scancel`, a node lost) or that died without a result does not end
  the sweep: it is a failed job like one that raised, the others' results are kept, the
  sweep's report is made, and the same command again trains only the jobs that did not
  finish. Without Slurm accounting (slurmdbd) submitit cannot learn that such a job ended
  (`sacct` fails) and would wait for it forever: a job that has left the queue (`squeue`)
  without writing its result is taken for dead after a grace period.
- a job warned of its time limit (Slurm sends SIGUSR2 `signal_delay_s` seconds before it, as
  submitit asks; a preemption may send it too) stops after its epoch: its checkpoint is
  written and its run ends KILLED, tagged with the reason. Then submitit requeues it, up to
  `max_num_timeout` times for time limits, and the requeued job continues the same run from
  its checkpoint (`resume=<run id>`). Beyond that the run stays KILLED, and the same command
  continues it. (submitit alone would requeue at once, mid-epoch, and with the default
  `max_num_timeout: 0` end the run FAILED.)
"""

import functools
import logging
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

from hydra_plugins.runner_slurm.submitit_internals import (
    preempt_signal,
    requeue_state,
    slurm_results_replaced,
)
from runner.training import signals

log = logging.getLogger("runner.sweep")
POLL_SECONDS = 2.0
GONE_GRACE_SECONDS = 10.0  # out of the queue, no result yet: a result file may still land


def _queued(job_id: str) -> bool:
    """Whether Slurm still holds the job (pending, running or completing)."""
    found = subprocess.run(
        ["squeue", "-h", "-r", "-j", job_id, "-o", "%i"], capture_output=True, text=True
    )
    if found.returncode != 0:  # squeue says an ended job id is invalid: gone
        return False
    return job_id in found.stdout.split()


def _wait_while_queued(job: Any) -> None:
    """Wait until the job has its result, or raise once it has left the queue without one."""
    from submitit.core.utils import UncompletedJobError

    gone_since = None
    while not job.paths.result_pickle.exists():
        if _queued(job.job_id):
            gone_since = None
        elif gone_since is None:
            gone_since = time.monotonic()
        elif time.monotonic() - gone_since > GONE_GRACE_SECONDS:
            raise UncompletedJobError(
                f"job {job.job_id} left the Slurm queue without a result (cancelled, or its "
                f"node lost); its output: {job.paths.stdout.parent}"
            )
        time.sleep(POLL_SECONDS)


def _result_or_failure(job: Any, results: Callable[[], list]) -> list:
    """A job's results once it has them; a FAILED JobReturn if it ended without (submitit's
    launcher collects every job's result in one expression, so the first such job would
    lose all the others')."""
    try:
        _wait_while_queued(job)
        return results()
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        log.error("Slurm job %s ended without a result: %s", job.job_id, first)
        failed = JobReturn(status=JobStatus.FAILED)
        failed.return_value = err
        return [failed]


def _noting_sweep(task: Any, launcher: Any, cfg: Any) -> Any:
    """The job's task, which first notes the sweep's MLflow ids as the job sees them (after
    the job, Hydra's copy of its config resolves `${now:}` in the sweep folder anew)."""
    from hydra.core.hydra_config import HydraConfig

    from runner.config.launch import launch_of

    try:
        launcher._sweep = launch_of(HydraConfig.get()).sweep
    except Exception:  # the job reports its own config's problems
        launcher._sweep = None
    return task(cfg)


class _LimitWarning:
    """Slurm's warning signal, for the length of one job: taken from submitit's handler (which
    would requeue at once, mid-epoch) and handed to the job, to stop after its epoch."""

    def __init__(self) -> None:
        self.signum = preempt_signal()  # SIGUSR2 (SUBMITIT_PREEMPT_SIGNAL)
        self.submitit = signal.getsignal(self.signum)  # checkpoint(), requeue, exit
        self.received = False
        signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.received = True
        name = signals.signal_name(signum)
        signals.warned(signum, f"Slurm's warning of the time limit or a preemption ({name})")


class ResilientSlurmLauncher(SlurmLauncher):
    """submitit's Slurm launcher; a job without a result is a failed job, not the sweep's end,
    and a job warned of its time limit ends its run KILLED, then is requeued to continue it."""

    _continue_run: str | None = None  # the run a requeued job continues
    _sweep: Any = None  # the job's SweepInfo, as the job read it

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit the jobs and wait for them all, as submitit's launcher does."""
        with slurm_results_replaced(_result_or_failure):
            return super().launch(job_overrides, initial_job_idx)

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[Any, Any],
    ) -> JobReturn:
        """One job, on its node (submitit calls this there); warned of the time limit, it is
        requeued once its run has ended, if submitit may."""
        warning = _LimitWarning() if signals.main_thread() else None
        task = self.task_function
        self.task_function = functools.partial(_noting_sweep, task, self)
        try:
            result = super().__call__(
                sweep_overrides, job_dir_key, job_num, job_id, singleton_state
            )
        finally:
            self.task_function = task  # (pickled again if the job is requeued)
        if warning is not None and warning.received:
            self._requeue(warning)
        return result

    def _requeue(self, warning: _LimitWarning) -> None:
        """After the warning: have submitit requeue the job (it exits the process) unless its
        run ended FINISHED or FAILED before, or it met `max_num_timeout` time limits; the run
        is tagged with what stopped it either way."""
        ended = signals.last_run()
        if ended is not None and ended[1] in ("FINISHED", "FAILED"):
            return  # it ended before the limit: nothing to continue
        state = requeue_state(warning.submitit)
        if state is None:  # not a submitit job: the same command continues the run
            return
        import submitit

        timed_out, left = state
        cause = {
            True: "time limit", False: "preemption (before its time limit)",
            None: "time limit or a preemption",
        }[timed_out]  # fmt: skip
        what = f"the {cause} of Slurm job {submitit.JobEnvironment().job_id}"
        self._continue_run = ended[0] if ended else None
        if left is not None and left < 0:
            limit = self.params.get("max_num_timeout", 0)
            why = (
                f"{what}; not requeued (hydra.launcher.max_num_timeout={limit} allows no more): "
                "the same command continues it from its checkpoint"
            )
        else:
            allows = f"allows {left} more" if left is not None else "says how often"
            why = (
                f"{what}; requeued to continue from its checkpoint (hydra.launcher."
                f"max_num_timeout {allows})"
            )
        self._tag_run(why)
        log.warning("run %s stopped by %s", self._continue_run or "(none started)", why)
        if left is not None and left < 0:
            return
        try:
            warning.submitit(warning.signum, None)  # calls checkpoint() below; exits
        except subprocess.SubprocessError as err:  # `scontrol requeue` refused (a job at its limit)
            log.error("the job was not requeued (%s); the same command continues it", err)

    def _tag_run(self, why: str) -> None:
        """Say on the job's run (if it started) what stopped it."""
        if self._continue_run is None or self._sweep is None:
            return
        try:
            from mlflow.tracking import MlflowClient

            from runner.tracking import tags

            client = MlflowClient(self._sweep.tracking_uri)
            client.set_tag(self._continue_run, tags.STOPPED_BY, why)
        except Exception as err:  # the requeue matters more than the note
            log.warning("could not tag run %s with its stop: %s", self._continue_run, err)

    def checkpoint(self, sweep_overrides: list[str], *args: Any) -> Any:
        """What submitit requeues: the same job, continuing its run (`resume=<run id>`)."""
        import submitit

        overrides = list(sweep_overrides)
        if self._continue_run is not None:
            overrides = [o for o in overrides if o.lstrip("+").split("=", 1)[0] != "resume"]
            overrides.append(f"resume='{self._continue_run}'")  # quoted: never a number
        return submitit.helpers.DelayedSubmission(self, overrides, *args)
