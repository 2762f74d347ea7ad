"""runner as an installed tool (issue 14): a wheel built from the repository's tracked files,
installed without -e into a fresh virtual environment, used from folders of its own.

The fresh environment gets the wheel alone (`--no-deps`, no index); its dependencies (torch,
mlflow, ...) come from this test's own environment through a .pth line written after the
install, so no package is downloaded and nothing of the checkout is importable there.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import free_port, tails
from tests.test_readme import INSTALL_SECTION, bash_commands, readme_blocks, serve

ROOT = Path(__file__).resolve().parents[1]
# One worker runs them under `--dist loadgroup`: each worker would build the wheel and the
# environment (the module's fixture) again.
pytestmark = pytest.mark.xdist_group("install")


def tracked_copy(target: Path) -> Path:
    """The repository's tracked files (what `pip install git+...` builds from) in `target`."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the runner wheel; its bin/ folder."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: the tracked files cannot be listed")
    base = tmp_path_factory.mktemp("install")
    source, dist, env = tracked_copy(base / "source"), base / "dist", base / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, tails(build)
    (wheel,) = dist.glob("runner-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    install = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, tails(install)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "runner-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


def run(bin_dir: Path, command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A command of the fresh environment (`runner`, `python`) run in `cwd`."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(bin_dir / command[0]), *command[1:]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def finished_runs(folder: Path) -> list[tuple[str, int]]:
    """(run name, epochs of train_loss) of each FINISHED run in `folder`'s embedded store."""
    with sqlite3.connect(folder / "outputs" / "mlflow.db") as db:
        return db.execute(
            "SELECT r.name, (SELECT COUNT(*) FROM metrics m WHERE m.run_uuid = r.run_uuid "
            "AND m.key = 'train_loss') FROM runs r WHERE r.status = 'FINISHED' ORDER BY r.name"
        ).fetchall()


def test_the_wheel_runs_the_default_experiment_from_any_folder(venv, tmp_path):
    """`runner` with no arguments: the shipped configs and data resolve inside the package."""
    where = run(venv, ["python", "-c", "import runner.project as p; print(p.CONF_DIR)"], tmp_path)
    assert where.stdout.startswith(str(venv.parent)), tails(where)  # not the checkout's
    proc = run(venv, ["runner"], tmp_path)
    assert proc.returncode == 0, tails(proc)
    assert finished_runs(tmp_path) == [("xor_deep adam", 200)]
    assert "(after `python -m runner.ui`)" in proc.stdout.strip().splitlines()[-1]
    table = run(venv, ["runner", "experiment=house_tiny", "trainer.epochs=3"], tmp_path)
    assert table.returncode == 0, tails(table)  # ${runner.project:}/data/house_tiny.csv


def test_the_readme_section_on_own_projects_works_as_written(venv, tmp_path):
    """README "Use it in your own project", command by command in a fresh folder: its venv
    and `pip install` lines are this fixture's fresh environment and wheel, `cd` moves."""
    commands = [
        c
        for b in readme_blocks()
        if b.section == INSTALL_SECTION and b.lang == "bash"
        for c in bash_commands(b)
    ]
    assert commands, f"README has no commands under {INSTALL_SECTION!r}"
    cwd = tmp_path
    printed: dict[str, str] = {}  # what each command printed, by its first argument
    for command in commands:
        words = shlex.split(command.text)
        if words[:3] == ["python", "-m", "venv"]:
            assert "activate" in command.text, command.text  # the fixture's fresh venv
        elif words[:2] == ["pip", "install"]:
            assert "--no-deps" not in words, command.text  # the wheel, as built above
        elif words[0] == "cd":
            cwd = cwd / words[1]
        else:
            assert words[0] in ("runner", "python"), f"L{command.line}: {command.text}"
            proc = run(venv, words, cwd)
            shown = f"README line {command.line}: {command.text}\n{tails(proc)}"
            assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, shown
            printed[words[1] if words[0] == "runner" else words[2]] = proc.stdout + proc.stderr
    runs = finished_runs(cwd)
    # The single run, then the sweep's parent and its seed=2 and seed=3 jobs: its seed=1 job
    # is the single run's exact config, FINISHED already, so the sweep reuses it
    # (skip_finished); the other two, with the starter's own `swish` layer, train stacked.
    assert len(runs) == 4, runs
    assert [epochs for _, epochs in runs].count(40) == 3, runs  # the parent: the best's final
    with sqlite3.connect(cwd / "outputs" / "mlflow.db") as db:
        stacked = db.execute("SELECT value FROM tags WHERE key = 'runner.stacked'").fetchall()
    assert stacked == [("2",), ("2",)], stacked
    # The reused run is the sweep's seed=1 job in its report, and says which command made it.
    sweep = printed["-m"]
    assert "skipped job 0 (experiment=mine seed=1): this exact config already FINISHED" in sweep
    assert "made by `python -m runner experiment=mine`" in sweep
    assert "\nseed=1 " in sweep and "seed=-" not in sweep, sweep
    assert (cwd / "outputs" / "reports" / "mine" / "comparison.csv").is_file()
    ui = [str(venv / "python"), "-m", "runner.ui", "--port", str(free_port())]
    assert "/#/experiments/" in serve(ui, cwd)  # the UI on the project's outputs/


def test_a_user_model_data_and_layer_from_config_dir(venv, tmp_path):
    """The starter project's model (with its plugin layer) and CSV data chosen through
    Hydra's `--config-dir`, a misspelt choice answered with the user's own names, and a
    project never overwritten."""
    project = tmp_path / "proj"
    new = run(venv, ["python", "-m", "runner.new", str(project)], tmp_path)
    assert new.returncode == 0, tails(new)
    again = run(venv, ["python", "-m", "runner.new", str(project)], tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr

    elsewhere = tmp_path / "elsewhere"  # no conf/ here: only the flag finds the groups
    (elsewhere / "data").mkdir(parents=True)
    shutil.copy(project / "data" / "mine.csv", elsewhere / "data")
    shutil.copy(project / "my_layers.py", elsewhere)
    mine = ["model=mine", "data=mine", "plugins=[my_layers]", "trainer.epochs=4"]
    proc = run(venv, ["runner", "--config-dir", str(project / "conf"), *mine], elsewhere)
    assert proc.returncode == 0, tails(proc)
    ((_, epochs),) = finished_runs(elsewhere)
    assert epochs == 4
    typo = run(venv, ["runner", "-cd", str(project / "conf"), "model=mien"], elsewhere)
    assert typo.returncode == 1 and "Did you mean 'mine'?" in typo.stderr, tails(typo)
    shadow = project / "conf" / "model" / "xor_deep.yaml"
    shadow.write_text("name: mine_too\n")
    warned = run(venv, ["python", "-m", "runner.check", "experiment=mine"], project)
    assert warned.returncode == 0 and f"warning: {shadow} is not read" in warned.stderr
