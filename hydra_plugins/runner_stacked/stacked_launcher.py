"""`hydra/launcher=stacked`: jobs whose resolved configs differ only in `seed` (or in what
the stacked update takes per member: runner.sweep.seed_group.MEMBER_KEYS) are trained in this
process as one stacked model (runner.sweep.stacked); every other job runs as the basic
launcher runs it. Every job keeps its Hydra job folder and its own MLflow child run."""

import functools
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.runner_stacked.compose import install
from hydra_plugins.runner_stacked.forks import MAX_WRITERS, fork_count, in_fork, run_in_forks
from runner.training import progress, signals, sweep_signals

if TYPE_CHECKING:  # (runner's sweep modules are imported when a sweep launches, not before)
    from runner.sweep.seed_group import Member

RUNNER_SECTIONS = {"model", "data", "optim", "trainer"}  # a runner training's config has them
log = logging.getLogger("runner.sweep")
JOB_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's default


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.runner_stacked.stacked_launcher.StackedLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="runner"
)


@dataclass
class Chunk:
    """Jobs of one seed group trained as one stacked model: their indices in the sweep, the
    JobReturn of preparing each (its value set once the job has run) and its Member."""

    indices: list[int]
    prepared: list[JobReturn]
    members: list["Member"]


class StackedLauncher(Launcher):
    """Gathers a sweep's jobs into seed groups (configs alike but for MEMBER_KEYS) and
    trains each group stacked."""

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what `launch` needs (Hydra calls this once per sweep, before the sweeper
        checks the jobs' configs), and compose seed-only variants once."""
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        install(hydra_context.config_loader)

    def _job(self, task: TaskFunction, config: DictConfig) -> JobReturn:
        """`task` in Hydra's job context of `config` (folder, log, .hydra, HydraConfig)."""
        assert self.hydra_context is not None and self.config is not None
        result = run_job(
            hydra_context=self.hydra_context, task_function=task, config=config,
            job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
        )  # fmt: skip
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return result

    def _prepare(self, config: DictConfig) -> tuple[JobReturn, "Member | None"]:
        """Prepare one job in its Hydra job context (`seed_group.prepare_member`): its
        JobReturn, whose value stays None until the job has run (or is the error, FAILED),
        and the Member it gave (None: it failed)."""
        from runner.sweep import seed_group

        made: list[Member] = []

        def prepare(cfg: DictConfig) -> None:
            made.append(seed_group.prepare_member(cfg))

        ret = self._job(prepare, config)
        return ret, (made[0] if made else None)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Prepare every job, train each stackable seed group at once, log every member."""
        setup_globals()
        assert self.hydra_context is not None and self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = idx
            configs.append(config)
        if not all(RUNNER_SECTIONS <= set(c.keys()) for c in configs):
            # Not the runner's training (another Hydra app): nothing to stack, so each job
            # runs as the basic launcher runs it, without importing torch and MLflow.
            log.info("Launching %d jobs one by one: not runner trainings", len(configs))
            return [self._job(self.task_function, c) for c in configs]
        from runner.sweep import seed_group

        log.info(
            "Launching %d job%s, seed groups stacked", len(configs), "s" if len(configs) > 1 else ""
        )
        both = [self._prepare(c) for c in configs]
        prepared, members = [ret for ret, _ in both], [member for _, member in both]
        results: list[JobReturn | None] = [None] * len(configs)
        by_stack_key: dict[str, list[int]] = {}
        continuing: list[int] = []
        for i, (ret, member) in enumerate(zip(prepared, members, strict=True)):
            if member is None:  # preparing it failed (a bad config): the solo path records it
                results[i] = self._job(self.task_function, configs[i])
            elif member.job is None:  # already FINISHED: skipped, as solo
                ret.return_value = member.done_metric
                results[i] = ret
            elif member.job.resume is not None:  # continues its own KILLED run, alone
                continuing.append(i)
            else:
                by_stack_key.setdefault(seed_group.stack_key(member), []).append(i)
        if continuing:
            nums = [members[i].launch.job_num for i in continuing]  # type: ignore[union-attr]
            log.info(
                f"job {nums[0]} continues its interrupted run alone, from its checkpoint"
                if len(nums) == 1
                else f"jobs {nums} continue their interrupted runs one at a time, each from "
                "its checkpoint (a stack trains all its members from epoch 1)"
            )
            self._run_one_by_one(continuing, configs, results)
        chunks: list[Chunk] = []
        for indices in by_stack_key.values():
            chunks += self._plan_seed_group(
                indices, configs, [prepared[i] for i in indices], [members[i] for i in indices],
                results,
            )  # fmt: skip
        self._run_chunks(chunks, configs, results)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _run_one_by_one(
        self, indices: list[int], configs: list[DictConfig], results: list[JobReturn | None]
    ) -> None:
        """These jobs, each as the basic launcher runs it (its own build, its own run)."""
        for i in indices:
            results[i] = self._job(self.task_function, configs[i])

    def _plan_seed_group(
        self,
        indices: list[int],
        configs: list[DictConfig],
        prepared: list[JobReturn],
        members: list["Member"],
        results: list[JobReturn | None],
    ) -> list[Chunk]:
        """One seed group: its chunks to train stacked (as many members as fit in memory each),
        or, if it cannot stack, each job run now as the basic launcher runs it."""
        from runner.sweep.stack_plan import chunk_sizes
        from runner.sweep.stacked import stackable

        jobs = [m.job for m in members]
        reason = "a group of one" if len(jobs) == 1 else stackable(jobs)
        if reason is not None:
            if len(jobs) > 1:
                log.info(
                    "jobs %s run one at a time: %s", [m.launch.job_num for m in members], reason
                )
            self._run_one_by_one(indices, configs, results)
            return []
        stack_max = jobs[0].spec.sweep.stack_max
        sizes = chunk_sizes(jobs, stack_max)
        if len(sizes) > 1:
            log.info(
                "jobs %s train stacked in chunks of %s members (%s)",
                [m.launch.job_num for m in members], sizes,
                f"sweep.stack_max={stack_max}" if stack_max
                else "as many as fit in half the free memory and, on a CPU, whose weights "
                "and optimizer state fit in a core's share of half its cache; "
                "sweep.stack_max sets it",
            )  # fmt: skip
        starts = [sum(sizes[:k]) for k in range(len(sizes))]
        return [
            Chunk(
                indices[start : start + size],
                prepared[start : start + size],
                members[start : start + size],
            )
            for start, size in zip(starts, sizes, strict=True)
        ]

    def _run_chunks(
        self, chunks: list[Chunk], configs: list[DictConfig], results: list[JobReturn | None]
    ) -> None:
        """Train and log the stacked chunks: on CPU (with `trainer.threads=auto`), several at
        once on worker processes (one per core, each one torch thread), the costliest first;
        else one after another, each with its members' runs written by one process per core."""
        from runner.sweep.stack_plan import chunk_cost, share

        jobs = [c.members[0].job for c in chunks]
        # Forked processes must not touch a GPU the launching process uses: CPU only.
        on_cpu = all(j.parts.device.type == "cpu" for j in jobs)
        auto = all(j.spec.trainer.threads == "auto" for j in jobs)
        workers = fork_count(len(chunks)) if on_cpu and auto else 1
        if workers == 1:
            for chunk in chunks:
                writers = fork_count(len(chunk.indices), MAX_WRITERS) if on_cpu else 1
                self._run_stacked(chunk, configs, results, writers, open_early=writers > 1)
            return
        costs = [chunk_cost([m.job for m in c.members]) for c in chunks]
        shares = share(costs, workers)
        prepared_ids = {id(ret) for chunk in chunks for ret in chunk.prepared}
        log.info("%d stacked chunks train on %d processes at once", len(chunks), len(shares))

        def work(mine: list[int]) -> dict[int, Any]:
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # (forked workers have one thread each already)
            try:
                done: list[JobReturn | None] = [None] * len(configs)
                for c in mine:
                    self._run_stacked(chunks[c], configs, done, writers=1)
                # A stacked member's result is its prepared JobReturn: only its value travels
                # (a job of a chunk that fell back to running alone sends its own JobReturn).
                return {
                    i: ret.return_value if id(ret) in prepared_ids else ret
                    for i, ret in enumerate(done)
                    if ret is not None
                }
            finally:
                torch.set_num_threads(threads)

        returned = run_in_forks(work, shares, interruptible=True)
        for chunk in chunks:
            for i, ret in zip(chunk.indices, chunk.prepared, strict=True):
                value = returned.get(i)
                if isinstance(value, JobReturn):
                    results[i] = value
                else:  # (None where its worker died: no value, as a failed job)
                    ret.return_value = value
                    results[i] = ret

    def _run_stacked(
        self,
        chunk: Chunk,
        configs: list[DictConfig],
        results: list[JobReturn | None],
        writers: int,
        open_early: bool = False,
    ) -> None:
        """Train a chunk's jobs as one stacked model, then write each member's run (from
        `writers` processes). `open_early`: a forked process makes the members' runs, with
        their params and config files, while the group trains (CPU training leaves a core
        free for it); after training only what training gave is written."""
        from runner.sweep import seed_group
        from runner.sweep.stacked import StackInterrupted, stack_fit
        from runner.tracking.deferred import DeferredTracker
        from runner.training.metrics import primary_metric

        indices, prepared, members = chunk.indices, chunk.prepared, chunk.members
        jobs = [m.job for m in members]
        spec = jobs[0].spec
        trainer_pid = os.getpid()
        sweep_dir = members[0].launch.sweep_dir
        if sweep_signals.sweep_interrupted(sweep_dir):  # stopped before this group began
            raise signals.Interrupted(sweep_signals.sweep_interrupted(sweep_dir))

        def open_runs(share: list) -> dict[int, Any]:
            # Ctrl-C (or a SIGTERM to the process group) does not stop this process (in_fork):
            # it finishes making the runs, and the training process, interrupted, ends them
            # KILLED.
            tracker = DeferredTracker(spec.tracking)
            opened = {}
            for i, ret, member in share:
                with _job_log(ret):
                    opened[i] = seed_group.open_member(member, len(jobs), tracker, trainer_pid)
            return opened

        opening = (
            in_fork(open_runs, list(zip(indices, prepared, members, strict=True)))
            if open_early
            else None
        )
        started = time.perf_counter()
        progress = StackProgress(
            len(jobs), spec.trainer.epochs, primary_metric(jobs[0].data.task, spec.metric)
        )
        stopped = None  # the signal that stopped the group after an epoch
        at_once = False  # ... or within one
        try:
            # Ctrl-C (or SIGTERM) stops a stacked group after its epoch, as a solo job: its
            # members end KILLED with their epochs and checkpoints; a second stops it at once,
            # still keeping the epochs every member finished.
            with sweep_signals.job_signals(), signals.stop_on_signals():

                def should_stop() -> bool:  # a signal here, or a mark left by the sweep
                    return (
                        signals.STOP.signum or sweep_signals.sweep_interrupted(sweep_dir)
                    ) is not None

                outcome = stack_fit(
                    jobs, progress if spec.trainer.progress != "none" else None,
                    should_stop=should_stop,
                )  # fmt: skip
                stopped = signals.STOP.signum or sweep_signals.sweep_interrupted(sweep_dir)
        except StackInterrupted as err:  # the weights are mid-epoch: rows, no checkpoints
            outcome, stopped, at_once = err.results, err.signum, True
        except Exception as err:  # a case stacking does not handle: the jobs still run
            # Said with its traceback: a bug in stacked training must not hide as a slow sweep.
            log.warning(
                "stacked training of jobs %s failed (%s: %s); they run one at a time, each as "
                "the basic launcher runs it, so that a case stacked training does not handle "
                "(or a bug in it) costs time, not results. Its traceback:",
                [m.launch.job_num for m in members], type(err).__name__, err, exc_info=True,
            )  # fmt: skip
            if opening is not None:  # (each job makes its own run now)
                seed_group.discard_runs(list(opening().values()), DeferredTracker(spec.tracking))
            self._run_one_by_one(indices, configs, results)
            return
        except BaseException:  # interrupted (Ctrl-C): no run of it is left RUNNING
            if opening is not None:
                seed_group.kill_runs(list(opening().values()), DeferredTracker(spec.tracking))
            raise
        progress.close()
        seconds = time.perf_counter() - started
        trained = max(len(result.history) for result in outcome)
        where = f"within epoch {trained + 1}" if at_once else f"after epoch {trained}"
        log.info(
            "trained %d jobs stacked in %.2f s%s", len(jobs), seconds,
            f" (stopped {where})" if stopped is not None else "",
        )  # fmt: skip
        run_ids = opening() if opening is not None else {}
        items = list(zip(indices, prepared, members, outcome, strict=True))

        def write(share: list) -> dict[int, Any]:
            # A member's run is written at its end, in a few calls, into one opened store.
            tracker = DeferredTracker(spec.tracking)
            values = {}
            for i, ret, member, result in share:
                # Still the member's Hydra job (its folder, config and log were made when it
                # was prepared): only its log file is opened again, for the run's last lines.
                with _job_log(ret):
                    values[i] = seed_group.finish_member(
                        member, result, seconds, len(jobs), tracker, run_ids.get(i), stopped,
                        at_once,
                    )  # fmt: skip
            return values

        started = time.perf_counter()
        values = run_in_forks(write, [items[k::writers] for k in range(writers)])
        opened = sum(1 for run_id in run_ids.values() if run_id)
        log.info(
            "logged %d runs in %.2f s (%d writer process%s%s)",
            len(items), time.perf_counter() - started, writers, "es" if writers > 1 else "",
            f"; {opened} made while training" if open_early else "",
        )  # fmt: skip
        for i, ret in zip(indices, prepared, strict=True):
            ret.return_value = values.get(i)
            results[i] = ret


class StackProgress:
    """A stacked seed group's training on the console: its first, every tenth and last epoch,
    each as the mean and range over the members of the metric the sweep compares."""

    def __init__(self, size: int, epochs: int, metric: str) -> None:
        self.size, self.epochs, self.metric = size, epochs, metric
        self.every = max(1, epochs // 10)
        self.epoch, self.rows = 0, []
        self.live = size  # members still training: an epoch is whole once each has a row

    def __call__(self, member: int, epoch: int, row: dict[str, float]) -> None:
        if epoch != self.epoch:
            if self.rows:  # some member failed in the last epoch: fewer rows than expected
                self.live = len(self.rows)
                self.close()
            self.epoch, self.rows = epoch, []
        self.rows.append(row)
        if len(self.rows) == self.live:
            self.close()

    def close(self) -> None:
        """Show the epoch whose rows are in, if it is one to show."""
        epoch, rows, self.rows = self.epoch, self.rows, []
        if not rows or not (epoch in (1, self.epochs) or epoch % self.every == 0):
            return
        values = [r[self.metric] for r in rows if self.metric in r]
        shown = functools.partial(progress.metric_text, self.metric)
        spread = (
            f", {self.metric} mean {shown(sum(values) / len(values))} "
            f"(min {shown(min(values))}, max {shown(max(values))})"
            if values
            else ""
        )
        log.info(
            "stacked %d: epoch %d/%d, %d members training%s",
            self.size, epoch, self.epochs, len(rows), spread,
        )  # fmt: skip


@contextmanager
def _job_log(ret: JobReturn) -> Iterator[None]:
    """Log records go to the job's log file too (appended) while in this block."""
    hydra = ret.hydra_cfg.hydra
    handler = logging.FileHandler(Path(hydra.runtime.output_dir) / f"{hydra.job.name}.log")
    fmt = OmegaConf.select(hydra, "job_logging.formatters.simple.format")
    handler.setFormatter(logging.Formatter(fmt or JOB_LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
