"""`hydra/launcher=stacked`: jobs whose resolved configs differ only in `seed` are trained
in this process as one stacked model (runner.stacked); every other job runs as the basic
launcher runs it. Every job keeps its Hydra job folder and its own MLflow child run."""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger("runner.sweep")


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.runner_stacked.stacked_launcher.StackedLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="runner"
)


class StackedLauncher(Launcher):
    """Groups a sweep's jobs by config-without-seed and trains each group stacked."""

    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what `launch` needs (Hydra calls this once per sweep)."""
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _job(self, task: TaskFunction, config: DictConfig) -> JobReturn:
        """`task` in Hydra's job context of `config` (folder, log, .hydra, HydraConfig)."""
        assert self.hydra_context is not None and self.config is not None
        result = run_job(
            hydra_context=self.hydra_context, task_function=task, config=config,
            job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
        )  # fmt: skip
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return result

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Prepare every job, train each stackable group at once, log every member."""
        from runner import group as groups

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
        log.info("Launching %d jobs, seed groups stacked", len(configs))
        prepared = [self._job(groups.prepare_member, c) for c in configs]
        results: list[JobReturn | None] = [None] * len(configs)
        by_key: dict[str, list[int]] = {}
        for i, ret in enumerate(prepared):
            if ret.status != JobStatus.COMPLETED:  # a bad config: the solo path records it
                results[i] = self._job(self.task_function, configs[i])
            elif ret.return_value.job is None:  # already FINISHED: skipped, as solo
                ret.return_value = ret.return_value.done_metric
                results[i] = ret
            else:
                by_key.setdefault(groups.group_key(ret.return_value), []).append(i)
        for indices in by_key.values():
            self._run_group(indices, configs, [prepared[i].return_value for i in indices], results)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _run_group(
        self,
        indices: list[int],
        configs: list[DictConfig],
        members: list,
        results: list[JobReturn | None],
    ) -> None:
        """One group: stacked if it can be, else each job as the basic launcher runs it."""
        from runner import group as groups
        from runner.stacked import stack_fit, stackable
        from runner.tracking import make_tracker

        jobs = [m.job for m in members]
        reason = "a group of one" if len(jobs) == 1 else stackable(jobs)
        if reason is not None:
            if len(jobs) > 1:
                log.info(
                    "jobs %s run one at a time: %s", [m.launch.job_num for m in members], reason
                )
            for i in indices:
                results[i] = self._job(self.task_function, configs[i])
            return
        started = time.perf_counter()
        outcome = stack_fit(jobs)
        seconds = time.perf_counter() - started
        log.info("trained %d jobs stacked in %.2f s", len(jobs), seconds)
        tracker = make_tracker(jobs[0].spec.tracking)  # one store connection for the group
        for i, member, result in zip(indices, members, outcome, strict=True):
            finish = partial(groups.finish_member, member, result, seconds, len(jobs), tracker)
            results[i] = self._job(lambda cfg, finish=finish: finish(), configs[i])
