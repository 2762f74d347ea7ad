"""Run names that differ where the configs differ."""

from __future__ import annotations

import pytest

from runner.tracking.naming import run_name


@pytest.mark.parametrize(
    "overrides,swept,expected",
    [
        (["model=xor_deep", "optim=adam", "seed=1"], ["optim", "seed"], "s1 adam"),
        (["optim.lr=0.1", "data.fold=2"], ["optim.lr", "data.fold"], "fold2 lr=0.1"),
        ([], None, "xor_deep adam"),
        (["seed=3", "tracking.store_dir=/x"], None, "s3 xor_deep adam"),
        (["optim=sgd", "+optim.momentum=0.9"], None, "momentum=0.9 xor_deep adam"),
        # What differs comes first: the UI shows about 20 characters of a name.
        (["trainer.epochs=30", "seed=12"], None, "s12 epochs=30 xor_deep adam"),
    ],
)
def test_run_names(overrides, swept, expected):
    assert run_name(overrides, swept, "xor_deep", "adam") == expected


def test_long_names_are_cut():
    name = run_name([f"model.hidden=[{'64,' * 20}64]"], None, "mlp", "adam")
    assert len(name) == 40 and name.endswith("…")


def test_a_refused_resume_shows_config_values_as_yaml_writes_them():
    from runner.tracking.fingerprint import config_changes

    saved = {"trainer": {"early_stop": {"patience": 5}, "plots": True}, "seed": 1}
    config = {"trainer": {"early_stop": {"patience": None}, "plots": False}, "seed": 1, "x": 2}
    assert list(config_changes(saved, config).values()) == [
        "trainer.early_stop.patience 5 -> null",
        "trainer.plots true -> false",
        "x (unset) -> 2",
    ]
