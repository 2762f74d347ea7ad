"""Build hook: the wheel carries the shipped config groups and data sets inside `runner/`.

The repository keeps `conf/` and `data/` at its top (where a clone's users look for them);
an installed package has no repository around it, so `build_py` copies them into the
package, where `runner.config.project` looks first. An editable install reads them in place.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = {"conf": "**/*.yaml", "data": "*.csv"}  # folder: the files of it that ship


class BuildWithShippedFiles(build_py):
    """`build_py` that also copies conf/**/*.yaml and data/*.csv into the built package."""

    def run(self) -> None:
        """Build the packages, then add the shipped files under runner/."""
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for folder, pattern in SHIPPED.items():
            for source in sorted((root / folder).glob(pattern)):
                target = Path(self.build_lib) / "runner" / source.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildWithShippedFiles})
