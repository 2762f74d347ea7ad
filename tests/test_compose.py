"""The stacked launcher composes a sweep's seed-only variants once and copies them: each
copy must equal what Hydra itself composes for those overrides."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydra_plugins.runner_stacked.compose import SweepComposer
from runner.config.project import CONF_DIR

# Each case: jobs in launch order (the first composed by Hydra), and how many of them may be
# copies of an earlier one's composition.
CASES = [
    ([["seed=1"], ["seed=2"], ["seed=30"]], 2),
    ([["model=xor_deep", "optim=adam", "seed=1"], ["model=xor_deep", "optim=adam", "seed=7"]], 1),
    ([["experiment=xor_capacity", "seed=1", "trainer.epochs=3"],
      ["experiment=xor_capacity", "seed=2", "trainer.epochs=4"]], 1),
    ([["seed=1", "optim.lr=0.1"], ["seed=2", "optim.lr=0.05"], ["seed=2", "optim.lr=1e-3"]], 2),
    ([["seed=1", "data.n_samples=150"], ["seed=1", "data.n_samples='160'"]], 1),
    # Not plain values: a group choice, an added key. Each is composed by Hydra.
    ([["model=xor_deep"], ["model=xor_linear"]], 0),
    ([["seed=1", "+trainer.extra=1"], ["seed=2", "+trainer.extra=2"]], 0),
]  # fmt: skip


@pytest.fixture
def loader():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance().config_loader()
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("jobs", "copies"), CASES, ids=[" | ".join(" ".join(j) for j in jobs) for jobs, _ in CASES]
)
def test_a_copied_job_config_equals_hydras_own(loader, jobs, copies):
    master = loader.load_configuration(
        "config", overrides=["hydra/launcher=stacked", "hydra.mode=MULTIRUN"],
        run_mode=RunMode.MULTIRUN,
    )  # fmt: skip
    composer = SweepComposer(loader.load_sweep_config)
    for overrides in jobs:
        copied = composer(master_config=master, sweep_overrides=overrides)
        composed = loader.load_sweep_config(master, overrides)
        assert OmegaConf.to_container(copied) == OmegaConf.to_container(composed), overrides
        assert OmegaConf.is_struct(copied) and OmegaConf.is_struct(composed)
        assert OmegaConf.to_yaml(copied, resolve=False) == OmegaConf.to_yaml(composed)
        assert copied.hydra.job.override_dirname == composed.hydra.job.override_dirname
    assert composer.copied == copies, (composer.composed, composer.copied)
