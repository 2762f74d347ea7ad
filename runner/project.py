"""Where the project's own files are: its folder, the config groups, shipped data.

Importing this registers `${runner.project:}`, the project's folder, for configs that
point at files shipped with it (e.g. data/house_tiny.csv).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = PROJECT_ROOT / "conf"

OmegaConf.register_new_resolver("runner.project", lambda: str(PROJECT_ROOT), replace=True)
