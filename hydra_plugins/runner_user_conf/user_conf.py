"""Put the config groups of the folder one launches from (`./conf`) beside the shipped ones.

Hydra's own `--config-dir conf` does the same; this spares a user's project the flag. It
appends, as `--config-dir` does: a name both folders have is the shipped one (`python -m
runner` warns about such a shadowed file). It acts only on the runner's own config search
path, not on other Hydra apps installed beside it.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class UserConfSearchPath(SearchPathPlugin):
    """Appends `./conf` to the runner's config search path when that folder exists."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        """Add `file://<cwd>/conf` after the shipped groups (runner apps only)."""
        try:
            from runner.config.project import CONF_DIR, user_conf_dir
        except ImportError:  # a runner without user projects (e.g. another checkout's)
            return
        if not any(e.path.endswith(str(CONF_DIR)) for e in search_path.get_path()):
            return
        folder = user_conf_dir()
        if folder is not None:
            search_path.append(provider="runner-user", path=f"file://{folder}")
