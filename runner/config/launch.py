"""How Hydra launched this job: the little of Hydra's config that a job needs, read once.

In a sweep, the launching process writes the sweep's MLflow ids (store, experiment,
parent run) to a file in the sweep folder; every job, in any process or on any node,
reads them back here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

SWEEP_FILE = "mlflow_sweep.json"


@dataclass(frozen=True)
class SweepInfo:
    """Where a sweep's jobs log: the tracking URI, experiment and parent run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    swept: list[str] = field(default_factory=list)  # the keys the sweep varies


@dataclass(frozen=True)
class Launch:
    """One job as Hydra launched it."""

    multirun: bool
    overrides: list[str]
    output_dir: Path  # Hydra's job folder: log, .hydra/, checkpoints/
    cwd: str  # where the command was run
    job_num: int = 0
    sweep_dir: str | None = None  # absolute; None outside a sweep
    sweep: SweepInfo | None = None  # None outside a sweep (or if its start failed)
    parallel: int = 1  # jobs the launcher runs at once
    config_dirs: tuple[str, ...] = ()  # the command's --config-dir folders
    started_at: float = field(default_factory=time.time)  # the job's start (epoch seconds)

    @property
    def parent_run_id(self) -> str | None:
        """The sweep's parent run, which this job's run is a child of (None: no sweep)."""
        return self.sweep.parent_run_id if self.sweep else None

    @property
    def swept(self) -> list[str] | None:
        """The keys the sweep varies (None outside a sweep)."""
        return self.sweep.swept if self.sweep else None

    @property
    def checkpoint_path(self) -> Path:
        """Where this job keeps its latest checkpoint."""
        return self.output_dir / "checkpoints" / "last.pt"


def launch_of(hydra_cfg: Any) -> Launch:
    """Read a job's Launch from Hydra's runtime config (HydraConfig.get())."""
    from hydra.types import RunMode

    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    sweep_dir = str(Path(hydra_cfg.sweep.dir).resolve()) if multirun else None
    return Launch(
        multirun=multirun,
        # (resume= says which run goes on, not what it computes: never in a run's name)
        overrides=[
            o for o in hydra_cfg.overrides.task if not o.startswith(("resume=", "+resume="))
        ],
        output_dir=Path(hydra_cfg.runtime.output_dir).resolve(),
        cwd=hydra_cfg.runtime.cwd,
        job_num=hydra_cfg.job.num if multirun else 0,
        sweep_dir=sweep_dir,
        sweep=read_sweep(sweep_dir) if sweep_dir else None,
        parallel=parallel_jobs(hydra_cfg) if multirun else 1,
        config_dirs=tuple(
            str(source.path)
            for source in OmegaConf.select(hydra_cfg, "runtime.config_sources", default=[]) or []
            if source.provider == "command-line"
        ),
    )


def read_sweep(sweep_dir: str) -> SweepInfo | None:
    """The sweep's MLflow ids, as the launching process wrote them (None if absent)."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        return None
    return SweepInfo(**json.loads(path.read_text()))


def write_sweep(sweep_dir: str, info: SweepInfo) -> None:
    """Leave the sweep's MLflow ids where its jobs look for them."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    (Path(sweep_dir) / SWEEP_FILE).write_text(json.dumps(info.__dict__))


def parallel_jobs(hydra_cfg: Any) -> int:
    """How many jobs the launcher runs at once (joblib's n_jobs; 1 for the basic launcher)."""
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=None)
    if not isinstance(n_jobs, int):
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
