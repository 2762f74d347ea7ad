"""The test suites Hydra gives launcher plugin authors (hydra.test_utils.launcher_common_tests),
run against the runner's launchers as Hydra's own plugins run them: sweeps of Hydra's test
apps through `hydra/launcher=stacked` and, on a real one-node Slurm cluster,
`hydra/launcher=slurm`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.version import VersionBase
from packaging.version import Version

from runner.config.project import CONF_DIR

# Hydra's test apps do not search the runner's config folder, where `slurm` is defined.
SEARCH_RUNNER = f"hydra.searchpath=[file://{CONF_DIR}]"
# One-CPU jobs, as the cluster's 2-core node runs two at a time.
ON_SLURM = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", SEARCH_RUNNER]
QUIET = ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]
# Hydra's test apps keep Hydra 1.1's defaults (version_base=None): each job warns that it
# changes the working folder.
pytestmark = pytest.mark.filterwarnings("ignore:Future Hydra versions:UserWarning")


@pytest.fixture(autouse=True)
def _hydra_defaults_of_a_fresh_process() -> Iterator[None]:
    """Hydra's suites expect a fresh process's version base (unset: Hydra 1.1's defaults, so
    jobs change folder); a test run before in the same worker may have set 1.3 for the
    process (`initialize_config_dir(version_base="1.3")` keeps it), as the runner does."""
    base = VersionBase.instance()
    before = base.getbase()
    base.setbase(Version("1.1"))
    yield
    base.version_base = before


@pytest.mark.parametrize("launcher_name, overrides", [("stacked", [])])
class TestStackedLauncher(LauncherTestSuite):
    """Hydra's launcher tests: jobs that are not runner trainings run one by one."""


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags", [({}, [*QUIET, "hydra/launcher=stacked"])]
)
class TestStackedLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration tests: a task script's sweep, its job names and folders."""


class OnSlurm:
    """On the shared one-node Slurm cluster (tests/conftest.py's `slurm_conf`)."""

    @pytest.fixture(autouse=True)
    def _on_the_cluster(self, slurm_conf: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SLURM_CONF", slurm_conf)


@pytest.mark.xdist_group("slurm")
@pytest.mark.parametrize("launcher_name, overrides", [("slurm", ON_SLURM)])
class TestSlurmLauncher(OnSlurm, LauncherTestSuite):
    """Hydra's launcher tests, each sweep's jobs run as Slurm jobs."""


@pytest.mark.xdist_group("slurm")
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags", [({}, [*QUIET, "hydra/launcher=slurm", *ON_SLURM])]
)
class TestSlurmLauncherIntegration(OnSlurm, IntegrationTestSuite):
    """Hydra's integration tests, each task script's jobs run as Slurm jobs."""
