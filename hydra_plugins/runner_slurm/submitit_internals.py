"""submitit's internals (and hydra-submitit-launcher's) that the Slurm launcher relies on,
all here (none is their public API).

Checked against submitit 1.5.4 and hydra-submitit-launcher 1.2.0 (`CHECKED_AGAINST`);
tests/test_dependency_internals.py fails, naming the name, on an upgrade that moved one.
Each is looked up when it is used, never at import; if one is gone the launcher goes on
without it and says so once:

- `submitit.slurm.slurm.SlurmJob.results` (submitit.core.core.Job's): replaced on
  `SlurmJob` alone (no other submitit job class), for the length of one `launch`, so that a
  job that ended without a result gives a FAILED JobReturn instead of ending the sweep. It
  takes effect because hydra-submitit-launcher 1.2.0's `BaseSubmititLauncher.launch`
  collects every job's result with `j.results()` (`LAUNCH_COLLECTS`, read from its source).
  If either moved: submitit's own behaviour (such a job ends the sweep).
- `SlurmJobEnvironment.USR_SIG`: the name of Slurm's warning signal (USR2 unless
  SUBMITIT_PREEMPT_SIGNAL says otherwise). If gone: read from SUBMITIT_PREEMPT_SIGNAL as
  submitit 1.5.4 reads it.
- submitit's handler of that signal is a method of `submitit.core.job_environment.
  SignalHandler`, whose `has_timed_out()` tells a time limit from a preemption and whose
  `_delayed._timeout_countdown` counts the time limits left before submitit stops
  requeuing. If gone: the cause and the count are unknown, and submitit's handler alone
  decides whether to requeue.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runner.errors import DependencyMoved

log = logging.getLogger("runner.sweep")

CHECKED_AGAINST = {"submitit": "1.5.4", "hydra-submitit-launcher": "1.2.0"}
LAUNCH_COLLECTS = "j.results()"  # in BaseSubmititLauncher.launch: what the replacement catches
PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"


def moved(name: str, dependency: str = "submitit") -> DependencyMoved:
    """The one-line error for a name of `dependency` that is gone."""
    return DependencyMoved(dependency, name, CHECKED_AGAINST[dependency])


def launch_collects_results() -> bool:
    """Whether hydra-submitit-launcher's `launch` still collects each job's result with
    `Job.results()` (else replacing it changes nothing)."""
    try:
        from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

        return LAUNCH_COLLECTS in inspect.getsource(BaseSubmititLauncher.launch)
    except (ImportError, AttributeError, OSError, TypeError):
        return False


@contextmanager
def slurm_results_replaced(results: Callable[[Any, Callable[[], list]], list]) -> Iterator[None]:
    """While in this block, a Slurm job's `results()` is `results(job, submitit's results)`."""
    try:
        from submitit.slurm.slurm import SlurmJob

        original = SlurmJob.results
    except (ImportError, AttributeError):
        moved("submitit.slurm.slurm.SlurmJob.results").fall_back(log, _AS_SUBMITIT)
        yield
        return
    if not launch_collects_results():
        moved(
            f"`{LAUNCH_COLLECTS}` in BaseSubmititLauncher.launch", "hydra-submitit-launcher"
        ).fall_back(log, _AS_SUBMITIT)
    own = "results" in vars(SlurmJob)  # (else it is Job's, inherited)

    def replaced(job: Any) -> list:
        return results(job, lambda: original(job))

    SlurmJob.results = replaced
    try:
        yield
    finally:
        if own:
            SlurmJob.results = original
        else:
            del SlurmJob.results


_AS_SUBMITIT = "a Slurm job that ends without a result ends the sweep, as with submitit alone"


def preempt_signal() -> int:
    """Slurm's warning of a time limit or a preemption, as submitit asks for it (SIGUSR2
    unless SUBMITIT_PREEMPT_SIGNAL names another)."""
    try:
        from submitit.slurm.slurm import SlurmJobEnvironment

        name = SlurmJobEnvironment.USR_SIG
    except (ImportError, AttributeError):
        moved("submitit.slurm.slurm.SlurmJobEnvironment.USR_SIG").fall_back(
            log, f"the signal is read from {PREEMPT_SIGNAL_ENV} (default USR2)"
        )
        name = os.environ.get(PREEMPT_SIGNAL_ENV, "USR2")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        raise RuntimeError(
            f"{PREEMPT_SIGNAL_ENV}={name!r}: no signal SIG{name}; set it to one, e.g. USR2"
        ) from None


def requeue_state(handler: Any) -> tuple[bool | None, int | None] | None:
    """For submitit's handler of the warning signal (as `signal.getsignal` gives it): whether
    the job met its time limit (False: a preemption) and how many more time limits submitit
    requeues it for (negative: none); None for either that this submitit does not tell, and
    None in all for a handler that is not submitit's (a job not started by submitit)."""
    owner = getattr(handler, "__self__", None)  # submitit's SignalHandler
    if owner is None:
        return None
    try:
        timed_out = bool(owner.has_timed_out())
    except AttributeError:
        moved("SignalHandler.has_timed_out").fall_back(log, _UNTOLD)
        return None, None
    try:
        left = owner._delayed._timeout_countdown - timed_out
    except AttributeError:
        moved("SignalHandler._delayed._timeout_countdown").fall_back(log, _UNTOLD)
        left = None
    return timed_out, left


_UNTOLD = "submitit's handler alone decides whether the job is requeued"
