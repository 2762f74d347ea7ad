"""`hydra/launcher=slurm`: submitit's Slurm launcher, except that a job Slurm cancelled
(`scancel`, a node lost, a time limit) or that died without a result does not end the sweep:
it is a failed job like one that raised, the others' results are kept, the sweep's report is
made, and the same command again trains only the jobs that did not finish.

Without Slurm accounting (slurmdbd) submitit cannot learn that such a job ended (`sacct`
fails) and would wait for it forever: a job that has left the queue (`squeue`) without
writing its result is taken for dead after a grace period."""

import logging
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

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


@contextmanager
def _failed_jobs_returned() -> Iterator[None]:
    """While in this block, a submitit job that ended without a result gives a FAILED
    JobReturn instead of raising (submitit's launcher collects every job's result in one
    expression, so the first such job would lose all the others')."""
    from submitit.core.core import Job

    results = Job.results

    def results_or_failure(job: Job) -> list:
        try:
            _wait_while_queued(job)
            return results(job)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            log.error("Slurm job %s ended without a result: %s", job.job_id, first)
            failed = JobReturn(status=JobStatus.FAILED, _return_value=err)
            return [failed]

    Job.results = results_or_failure
    try:
        yield
    finally:
        Job.results = results


class ResilientSlurmLauncher(SlurmLauncher):
    """submitit's Slurm launcher; a job without a result is a failed job, not the sweep's end."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit the jobs and wait for them all, as submitit's launcher does."""
        with _failed_jobs_returned():
            return super().launch(job_overrides, initial_job_idx)
