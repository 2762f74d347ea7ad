"""`python -m runner.check` for real: configs are validated, sweeps expanded, nothing trained."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from runner.check import CONF_DIR, compose_job, expand, job_problems
from tests.conftest import run_cli


def run_check(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m runner.check` in `cwd`."""
    return run_cli(*args, cwd=cwd, timeout=120, module="runner.check")


def test_a_valid_config_passes_and_writes_nothing(tmp_path):
    proc = run_check("model=xor_linear", "trainer.epochs=3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok   model=xor_linear trainer.epochs=3" in proc.stdout
    assert proc.stdout.rstrip().endswith("1 job checked, 0 failed")
    assert not (tmp_path / "outputs" / "mlflow.db").exists()
    assert list(tmp_path.iterdir()) == []  # no outputs/, no Hydra run folder, no store


def test_a_bad_value_fails_naming_the_key(tmp_path):
    proc = run_check("optim.lr=fast", cwd=tmp_path)
    assert proc.returncode == 1
    assert "FAIL optim.lr=fast" in proc.stdout
    assert "optim.lr: 'fast' is not a number" in proc.stdout
    assert "1 job checked, 1 failed" in proc.stdout


def test_a_sweep_is_expanded_into_every_job(tmp_path):
    proc = run_check("-m", "model=xor_linear,xor_deep", "optim=sgd,adam", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ok = [line for line in proc.stdout.splitlines() if line.startswith("ok   ")]
    assert ok == [
        "ok   model=xor_linear optim=sgd",
        "ok   model=xor_linear optim=adam",
        "ok   model=xor_deep optim=sgd",
        "ok   model=xor_deep optim=adam",
    ]
    assert "4 jobs checked, 0 failed" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_one_bad_sweep_value_fails_only_its_job(tmp_path):
    proc = run_check("-m", "optim.lr=0.1,-1", cwd=tmp_path)
    assert proc.returncode == 1
    assert "ok   optim.lr=0.1" in proc.stdout
    assert "FAIL optim.lr=-1\n    - optim.lr: -1 is out of range; allowed: > 0" in proc.stdout
    assert "2 jobs checked, 1 failed" in proc.stdout


def test_an_experiment_with_sweeper_params_is_a_sweep_without_dash_m(tmp_path):
    proc = run_check("experiment=xor_capacity", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "18 jobs checked, 0 failed" in proc.stdout
    assert "ok   model.hidden=[256,256,256] seed=3 experiment=xor_capacity" in proc.stdout


def test_an_unknown_group_choice_suggests_the_closest(tmp_path):
    proc = run_check("model=xor_dep", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Did you mean 'xor_deep'" in proc.stderr


def test_an_optuna_search_checks_the_base_config_once(tmp_path):
    proc = run_check("hparams_search=xor_optuna", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "optim.lr, model.width, model.depth" in proc.stdout
    assert "not expanded" in proc.stdout
    assert "1 job checked, 0 failed" in proc.stdout


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["model=xor_linear,xor_deep"], "need -m"),  # a sweep value without -m
        (["--cfg", "job"], "unknown option '--cfg'"),
        (["foo=[1,"], "no viable alternative"),  # not an override at all
        (["-m", "optim.lr=interval(0.1,1)"], "cannot enumerate"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, fragment):
    proc = run_check(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert fragment in proc.stderr


def test_expansion_matches_hydras_basic_sweeper():
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        parser = OverridesParser.create()
        base = compose_job(["experiment=xor_capacity"])
        task = ["experiment=xor_capacity", "optim=sgd,adam", "seed=7", "trainer.epochs=range(1,3)"]
        params = [f"{k}={v}" for k, v in base.hydra.sweeper.params.items()]
        (hydra_jobs,) = BasicSweeper.split_arguments(parser.parse_overrides(params + task), None)
        jobs = expand(base, task, parser)
    assert jobs == hydra_jobs and len(jobs) == 6 * 2 * 2  # seed=7 replaces the params' seeds


def test_hydra_interpolations_resolve_as_in_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose_job([], num=3)
        assert cfg.tracking.store_dir == f"{tmp_path}/outputs"  # `${hydra:runtime.cwd}/outputs`
        assert cfg.hydra.runtime.output_dir.endswith("/3")  # the sweep subdir of job 3
        assert job_problems(["tracking.experiment=${hydra:job.name}"]) == []
        assert "Interpolation key 'nope' not found" in job_problems(["optim.lr=${nope}"])[0]
        # a group choice from hydra.sweeper.params gets the did-you-mean too
        assert "Did you mean 'xor_deep'" in job_problems(["model=xor_dep"], num=0)[0]
    assert list(tmp_path.iterdir()) == []


def test_a_key_the_config_lacks_fails_only_the_jobs_without_it(tmp_path, monkeypatch, capsys):
    """The line `python -m runner` gives (not Hydra's six), per job: the sweep is still
    expanded, since the key's value does not shape it."""
    from runner.check import main

    monkeypatch.chdir(tmp_path)
    assert main(["-m", "optim=sgd,adam", "optim.momentum=0.9", "trainer.epoch=3"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "FAIL optim=sgd optim.momentum=0.9 trainer.epoch=3",
        "    - trainer.epoch: unknown key. Did you mean 'epochs'? Allowed: batch_size, "
        "checkpoint_every, data_path, deterministic, early_stop, epochs, grad_clip, keep, "
        "log_model, num_workers, on_nan, plots, progress, threads.",
        "FAIL optim=adam optim.momentum=0.9 trainer.epoch=3",
        "    - trainer.epoch: unknown key. Did you mean 'epochs'? Allowed: batch_size, "
        "checkpoint_every, data_path, deterministic, early_stop, epochs, grad_clip, keep, "
        "log_model, num_workers, on_nan, plots, progress, threads.",
        "    - optim.momentum: unknown key. Keys of optim: betas, lr, name, weight_decay; "
        "'momentum' belongs to optim=rmsprop, optim=sgd: choose one of those first",
        "2 jobs checked, 2 failed",
    ]
    assert main(["-m", "optim=sgd,adam", "optim.momentum=0.9"]) == 1
    assert capsys.readouterr().out.splitlines()[:2] == [
        "ok   optim=sgd optim.momentum=0.9",
        "FAIL optim=adam optim.momentum=0.9",
    ]
    assert list(tmp_path.iterdir()) == []
