"""Where the shipped files are (the config groups, the data sets) and where a user's are.

A clone keeps `conf/` and `data/` at its top; an installed wheel carries them inside the
package (setup.py copies them in at build time). Importing this registers
`${runner.project:}`, the folder holding both, for configs that point at shipped files
(e.g. `${runner.project:}/data/house_tiny.csv`), and `${runner.fresh_dir:PATH}`, which
gives each run and sweep a folder of its own.

A user's own project keeps its config groups in `./conf` (found without flags) or in any
folder given with Hydra's `--config-dir`: they add options beside the shipped ones.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # runner/
SHIPPED_DIR = PACKAGE_DIR if (PACKAGE_DIR / "conf").is_dir() else PACKAGE_DIR.parent
CONF_DIR = SHIPPED_DIR / "conf"
USER_CONF = "conf"  # a user's config groups, relative to where they launch
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")

OmegaConf.register_new_resolver("runner.project", lambda: str(SHIPPED_DIR), replace=True)


def fresh_dir(path: str) -> str:
    """`path`, else `path-2`, `path-3`...: the first that did not exist, created now.

    Run folders are named by the second; runs started in the same second would otherwise
    share one, and with it their checkpoints and a sweep's parent-run file. Cached, so a
    config resolves it once; Hydra copies the cache to each job of a sweep, so the jobs
    (in any process) see their own sweep's folder."""
    base = Path(path)
    for n in itertools.count(1):
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if not _MAKE_FOLDERS:  # only named (runner.check): the first free name
            if not folder.exists():
                return str(folder)
            continue
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        return str(folder)
    raise AssertionError("unreachable")


_MAKE_FOLDERS = True


def name_folders_only() -> None:
    """From now on in this process, `${runner.fresh_dir:}` names a folder without making
    it (a config check that starts no run)."""
    global _MAKE_FOLDERS
    _MAKE_FOLDERS = False


OmegaConf.register_new_resolver("runner.fresh_dir", fresh_dir, use_cache=True, replace=True)


def user_conf_dir(cwd: Path | None = None) -> Path | None:
    """`./conf` of the folder one launches from, unless it is the shipped one (a clone)."""
    folder = (cwd or Path.cwd()) / USER_CONF
    if folder.is_dir() and folder.resolve() != CONF_DIR:
        return folder.resolve()
    return None


def split_config_dirs(argv: list[str]) -> tuple[list[Path], list[str]]:
    """The folders a command line adds with `--config-dir X`, `-cd X` or `--config-dir=X`,
    and the command line without those flags."""
    found, rest, args = [], [], iter(argv)
    for arg in args:
        name, sep, value = arg.partition("=")
        if name in CONFIG_DIR_FLAGS and sep:
            found.append(Path(value))
        elif arg in CONFIG_DIR_FLAGS:
            folder = next(args, None)  # the flag's value is the next word
            if folder is not None:
                found.append(Path(folder))
        else:
            rest.append(arg)
    return [path.resolve() for path in found], rest


def conf_dirs(argv: list[str]) -> list[Path]:
    """Every folder whose config groups a command line can choose from, in Hydra's order:
    the shipped groups first (they win a name both have), then the user's."""
    dirs = [CONF_DIR]
    for extra in [user_conf_dir(), *split_config_dirs(argv)[0]]:
        if extra is not None and extra not in dirs:
            dirs.append(extra)
    return dirs
