"""The house: the folders are the layers, the contracts catch a planted break, and the
paths users typed before the folders existed still import the same modules."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

PLANTS = {  # contract that must break: (file under runner/, line appended to it)
    "Layers: the folders, top to bottom": [("training/metrics.py", "import runner.job")],
    "Training knows nothing of Hydra, OmegaConf or MLflow": [
        ("training/device.py", "import omegaconf")
    ],
    "No import cycles inside runner or its folders": [
        ("config/launch.py", "import runner.config.choices"),
        ("config/choices.py", "import runner.config.launch"),
    ],
}


def lint_imports(root: Path) -> str:
    """import-linter's report on the package copied under `root`."""
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
    )  # fmt: skip
    return done.stdout + done.stderr


@pytest.fixture
def house(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, to plant imports in."""
    shutil.copytree(
        ROOT / "runner", tmp_path / "runner", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_contracts_hold_on_the_house(house: Path) -> None:
    report = lint_imports(house)
    assert "3 kept, 0 broken" in report, report


@pytest.mark.parametrize("contract", PLANTS)
def test_each_contract_catches_a_planted_import(house: Path, contract: str) -> None:
    for file, line in PLANTS[contract]:
        path = house / "runner" / file
        path.write_text(path.read_text() + f"\n{line}  # planted\n")
    report = lint_imports(house)
    assert f"{contract} BROKEN" in report, report


def test_every_runner_folder_says_its_job_and_what_it_may_import() -> None:
    folders = [p for p in (ROOT / "runner").iterdir() if (p / "__init__.py").is_file()]
    assert {p.name for p in folders} >= {"components", "config", "sweep", "tracking", "training"}
    for folder in folders:
        module = importlib.import_module(f"runner.{folder.name}")
        assert module.__doc__ and len(module.__doc__.split()) > 15, folder.name
        assert "import" in module.__doc__, folder.name


def readme_map() -> list[str]:
    """The names in the README's map of the code (its ```text block), first word per line."""
    text = (ROOT / "README.md").read_text().split("## Map of the code", 1)[1]
    block = text.split("```text", 1)[1].split("```", 1)[0]
    names = []
    for line in block.strip().splitlines()[1:]:  # under `runner/`
        for word in line.split():
            if not word.endswith(("/", ".py")):
                break  # the line's description starts
            names.append(word)
    return names


def test_the_readme_map_names_every_folder_and_only_what_exists() -> None:
    mapped = readme_map()
    packages = {f"{p.name}/" for p in (ROOT / "runner").iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(mapped), f"folders missing from the README map: {packages - set(mapped)}"
    missing = [name for name in mapped if not (ROOT / "runner" / name).exists()]
    assert not missing, f"the README map names what runner/ does not hold: {missing}"


@pytest.mark.parametrize("old, new", sorted(importlib.import_module("runner").MOVED.items()))
def test_old_import_paths_name_the_same_modules(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)
    assert importlib.import_module(new).__spec__.name == new


def test_what_users_import_and_name_still_works() -> None:
    from hydra.utils import get_class
    from runner.datasets import DataSplits as old_data_splits

    from runner.components.datasets import DataSplits
    from runner.registry import LAYERS  # noqa: F401  (README, the starter project, plugins)
    from runner.sweep.callback import SweepCallback

    assert old_data_splits is DataSplits
    assert get_class("runner.sweep.SweepCallback") is SweepCallback  # users' copied configs
    import runner.datasets.base  # an old package's module, not a second copy of it

    assert runner.datasets.base.DataSplits is DataSplits


@pytest.mark.parametrize(
    "command",
    ["runner", "runner.check", "runner.report", "runner.ui", "runner.new", "runner.predict",
     "runner.evaluate"],
)  # fmt: skip
def test_commands_answer_help(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", command, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # argparse's usage line, or (python -m runner) its own commands, each with an example
    assert "usage" in done.stdout.lower() or f"python -m {command} " in done.stdout


@pytest.mark.parametrize("old, new", sorted(importlib.import_module("runner").RENAMED.items()))
def test_renamed_or_moved_names_still_answer_and_say_where_they_are_now(old: str, new: str):
    module, _, name = old.rpartition(".")
    where, _, attribute = new.rpartition(".")
    with pytest.warns(DeprecationWarning, match=f"{old} is now {new}"):
        found = getattr(importlib.import_module(module), name)
    assert found is getattr(importlib.import_module(where), attribute)


def test_the_report_commands_module_still_has_the_reports_building_blocks():
    from runner.sweep import report

    with pytest.warns(DeprecationWarning, match="runner.report.capacity_plot is now"):
        from runner.report import capacity_plot
    assert capacity_plot is report.capacity_plot
    with pytest.raises(ImportError):
        from runner.report import no_such_name  # noqa: F401
