"""Command-line keys the config lacks (`trainer.epoch=10`): one line each, with the closest
key of that section, before Hydra composes; real compositions of the shipped configs."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runner.config.override_keys import command_line_problems, override_problems
from runner.config.project import CONF_DIR, conf_dirs
from runner.config.spec import validate
from runner.errors import ConfigError
from tests.configs import GOOD

TRAINER_KEYS = (
    "batch_size, checkpoint_every, data_path, deterministic, early_stop, epochs, grad_clip, "
    "keep, log_model, num_workers, on_nan, plots, progress, threads"
)


@pytest.fixture(autouse=True)
def launch_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Launch from an empty folder: the shipped groups only, unless a test adds ./conf."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problems(*argv: str) -> list[str]:
    return command_line_problems(list(argv), conf_dirs(list(argv)))


@pytest.mark.parametrize(
    "argv,line",
    [
        (["trainer.epoch=10"], "trainer.epoch: unknown key. Did you mean 'epochs'?"),
        (["sweep.skip_finish=false"], "sweep.skip_finish: unknown key. Did you mean 'skip_"),
        (["tracking.experimnt=x"], "tracking.experimnt: unknown key. Did you mean 'experiment'"),
        (["seeds=3"], "seeds: unknown key. Did you mean 'seed'"),
        (["data.n_sample=10"], "data.n_sample: unknown key. Did you mean 'n_samples'"),
        (["model.los.name=mse"], "model.los.name: unknown key (model has no 'los'). Did you"),
        (["optim.weight_decy=0.1"], "optim.weight_decy: unknown key. Did you mean 'weight_decay'"),
        (
            ["scheduler=step", "scheduler.step_siz=5"],
            "scheduler.step_siz: unknown key. Did you mean 'step_size'?",
        ),
    ],
)
def test_a_typo_in_each_section_is_one_line_with_the_closest_key(argv, line):
    (problem,) = problems(*argv)
    assert problem.startswith(line.split(" Did")[0]) and line in problem


def test_the_line_is_the_validators_for_the_same_key_added_with_plus():
    (line,) = problems("-m", "trainer.epoch=10,20")  # a sweep: once, not per job
    assert line == f"trainer.epoch: unknown key. Did you mean 'epochs'? Allowed: {TRAINER_KEYS}."
    cfg = copy.deepcopy(GOOD)
    cfg["trainer"]["epoch"] = 10  # what `+trainer.epoch=10` would compose
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.problems == [line]


def test_additions_deletions_hydra_keys_and_known_keys_pass():
    assert (
        problems(
            "+optim.amsgrad=true",
            "++trainer.epochs=3",
            "~model.l1",
            "hydra.job.chdir=false",
            "model.layers.0.out_features=8",
            "data.n_train=50",
            "optim.lr=0.1",
            "seed=2",
        )  # fmt: skip
        == []
    )
    assert problems("experiment=auto_mpg", "+data.folds=5", "data.folds=3") == []
    assert problems("--cfg", "job", "-m", "hydra/launcher=stacked", "seed=1,2") == []


def test_a_key_a_group_file_does_not_set_may_be_added_with_plus():
    """optim.amsgrad is an argument of torch's Adam that adam.yaml does not set: no typo."""
    assert problems("optim.amsgrad=true") == [
        "optim.amsgrad: unknown key. Keys of optim: betas, lr, name, weight_decay; "
        "+optim.amsgrad=true adds a key the config does not set."
    ]
    (line,) = problems("model=mlp", "model.l1.strength=0.1")
    assert line.startswith("model.l1.strength: unknown key (model has no 'l1'). Keys of model:")
    assert line.endswith("+model.l1.strength=0.1 adds a key the config does not set.")


def test_inside_open_mappings_columns_layers_and_values():
    (column,) = problems("experiment=auto_mpg", "data.columns.horsepwer=drop")
    assert column.startswith("data.columns.horsepwer: unknown key. Did you mean 'horsepower'?")
    assert problems("model.layers.9.p=0.1") == [
        "model.layers.9.p: model.layers has no item '9'; allowed: 0 to 5"
    ]
    (layer,) = problems("model.layers.0.bias=false")
    assert layer.endswith("+model.layers.0.bias=false adds a key the config does not set.")
    assert problems("optim.lr.x=1") == [
        "optim.lr.x: unknown key (optim.lr is a single value, 0.015, not a mapping)"
    ]


def test_a_sweep_names_the_jobs_whose_choices_lack_the_key():
    (line,) = problems("-m", "optim=sgd,adam,rmsprop", "optim.momentum=0.9", "seed=1,2")
    assert line.startswith("optim.momentum: unknown key in the jobs with optim=adam. Keys of")
    (line,) = problems("-m", "model=glob(xor_*)", "model.width=2")  # fails in every job
    assert line.startswith(
        "model.width: unknown key. Keys of model: init_from, l1, layers, loss, name"
    )
    assert problems("-m", "model=xor_deep,mlp", "model.l1.strength=0.1,0.2")[0].startswith(
        "model.l1.strength: unknown key in the jobs with model=mlp"
    )


def test_a_run_with_known_keys_composes_nothing():
    """What a normal run costs: the files it reads tell that the keys exist; composing (a
    tenth of a second) is left for a key they lack."""
    composed = []

    def record(overrides: list[str]):
        composed.append(overrides)
        return compose(config_name="config", overrides=overrides)

    known = [
        ["trainer.epochs=1", "trainer.plots=false", "optim.lr=0.1", "seed=2"],
        ["model=mlp", "model.width=3", "optim=sgd", "optim.momentum=0.9"],
        ["experiment=house_tiny", "data.val_size=2", "model.layers.0.out_features=1"],
        ["hparams_search=xor_optuna", "model.width=4"],
        ["model=xor_linear,xor_deep", "model.layers.0.out_features=1,2"],
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for lines in known:
            assert override_problems(lines, [CONF_DIR], record) == []
        assert composed == []
        assert override_problems(["optim.amsgrad=true"], [CONF_DIR], record)
        assert composed == [[]]


def test_hydras_own_config_flags_are_left_to_hydra_and_values_are_not_flags():
    assert problems("-cn", "other", "trainer.epoch=1") == []
    assert problems("--config-path=/x", "trainer.epoch=1") == []
    assert len(problems("tracking.experiment=my-cnn", "trainer.epoch=1")) == 1
    assert len(problems("--info", "config", "trainer.epoch=1")) == 1


def test_a_users_config_dir_is_composed_in(launch_folder: Path):
    mine = launch_folder / "mine"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "tiny.yaml").write_text(
        "name: tiny\nlayers:\n  - {layer: linear, out_features: 1}\n  - {layer: sigmoid}\n"
        "loss: {name: bce}\n"
    )
    argv = ["--config-dir", str(mine), "model=tiny"]
    assert problems(*argv, "model.layers.0.out_features=2") == []
    (line,) = problems(*argv, "model.layers.0.out_feature=2")
    assert "Did you mean 'out_features'? Keys of model.layers.0: layer, out_features." in line


def test_a_key_only_other_choices_of_the_group_set_names_those_choices_not_plus():
    # `+scheduler.step_size=5` with the constant rate would be a setting nobody reads.
    (line,) = problems("scheduler.step_size=5")
    assert line.endswith("'step_size' belongs to scheduler=step: choose one of those first")
    (line,) = problems("optim.momentum=0.9")  # Adam has no momentum; SGD and RMSprop do
    assert "'momentum' belongs to optim=rmsprop, optim=sgd" in line
    cfg = copy.deepcopy(GOOD)
    cfg["scheduler"] = {"name": "none", "step_size": 5}  # what the `+` form composes
    with pytest.raises(ConfigError, match="scheduler 'none' .* takes no arguments"):
        validate(cfg)
