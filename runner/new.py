"""`python -m runner.new DIR`: write a starter project that uses the installed runner.

The project holds one data config pointing at a CSV table (written too), one model whose
hidden layers use a plugin layer, an experiment naming both, the plugin module and a
README saying how to run, sweep, check and browse it. Its `conf/` sits beside the shipped
config groups when one launches from DIR (runner.config.project), so `runner model=mine data=mine`
works there. Existing files are never overwritten.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROWS = 300  # the starter table's rows: enough for a visible learning curve in seconds

FILES = {
    "conf/data/mine.yaml": """\
# Your table, read by the general CSV loader (the runner's README, "Tables", lists every
# key). Paths are relative to the folder you launch from.
name: mine
type: csv
num_outputs: 1             # binary: one output
path: data/mine.csv
target: label
task: binary
columns:
  color: onehot            # get_dummies(dummy_na=True): a column for missing colors too
numeric: standardize       # training rows' mean and std; a missing value becomes the mean
test_size: 0.2             # held out, evaluated once at the end (test_* metrics)
val_size: 0.2              # of the rest, for the per-epoch validation metrics
""",
    "conf/model/mine.yaml": """\
# Your model: a small MLP whose hidden activation is the `swish` layer of my_layers.py
# (so its runs need `plugins=[my_layers]`, which experiment=mine sets).
name: mine
layers:
  - {layer: linear, out_features: 16, init: {weight: xavier_uniform}}
  - {layer: swish}
  - {layer: linear, out_features: 16}
  - {layer: swish}
  - {layer: linear, out_features: "${data.num_outputs}"}
loss: {name: auto}         # bce_with_logits for a binary target
""",
    "conf/experiment/mine.yaml": """\
# @package _global_
# Your whole setup in one name: `runner experiment=mine`.
defaults:
  - override /model: mine
  - override /data: mine
  - override /optim: adam

plugins: [my_layers]       # imports my_layers.py, which registers the `swish` layer
optim:
  lr: 0.01
trainer:
  epochs: 40
  batch_size: 16
""",
    "my_layers.py": '''\
"""Your own components: registered by name, then usable in any model config."""

from torch import nn

from runner.registry import LAYERS


@LAYERS.register("swish")
class Swish(nn.Module):
    """x * sigmoid(x)."""

    def forward(self, x):
        return x * x.sigmoid()
''',
    "README.md": """\
# {name}

Experiments for the `runner` tool (a declarative PyTorch runner): YAML in, MLflow runs out.

```
conf/data/mine.yaml         your table (data/mine.csv): target, column encodings, splits
conf/model/mine.yaml        your model: layers, initializers, loss
conf/experiment/mine.yaml   both, the optimizer, the trainer settings and the plugin
my_layers.py                your layers, registered by name
data/mine.csv               the table: is a point inside the unit circle?
outputs/                    written by runs: mlflow.db, artifacts, run folders
```

Run everything from this folder: `runner` finds `conf/` here beside its own config groups
(Hydra's `--config-dir conf` does the same from anywhere else).

```bash
runner experiment=mine                                  # one run
runner model=mine data=mine 'plugins=[my_layers]'       # the same pieces, chosen one by one
runner -m experiment=mine seed=1,2,3                    # a sweep: one run per seed
runner -m experiment=mine seed=1,2,3 hydra/launcher=stacked   # the same, trained at once
python -m runner.check experiment=mine                  # validate without training
python -m runner.ui                                     # browse the runs (outputs/mlflow.db)
python -m runner.report mine                            # every run of experiment `mine`, compared
```

Add a model: copy `conf/model/mine.yaml` to `conf/model/<name>.yaml` and choose it with
`model=<name>`. The runner's own groups (`model=xor_deep`, `data=mnist`, `optim=sgd`, ...)
stay available; a file here with the same name as one of them is not read (runner warns).
""",
    ".gitignore": "outputs/\n",
}


def starter_table(rows: int = ROWS, seed: int = 0) -> str:
    """A CSV of points labelled by whether they fall inside the unit circle, with a
    categorical column and a few missing values (so encodings and imputation show)."""
    rng = random.Random(seed)
    lines = ["x1,x2,color,label"]
    for _ in range(rows):
        x1, x2 = rng.uniform(-1.5, 1.5), rng.uniform(-1.5, 1.5)
        color = rng.choice(["red", "green", "blue", ""])
        label = int(x1 * x1 + x2 * x2 < 1.0)
        shown_x2 = "" if rng.random() < 0.03 else f"{x2:.4f}"
        lines.append(f"{x1:.4f},{shown_x2},{color},{label}")
    return "\n".join(lines) + "\n"


def write_project(folder: Path) -> list[Path]:
    """Write the starter project into `folder`; refuse (ValueError) if any file exists."""
    contents = {path: text for path, text in FILES.items()}
    contents["README.md"] = contents["README.md"].replace("{name}", folder.resolve().name)
    contents["data/mine.csv"] = starter_table()
    existing = [folder / path for path in contents if (folder / path).exists()]
    if existing:
        raise ValueError(f"{existing[0]} already exists; choose an empty or new folder")
    written = []
    for path, text in contents.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written


def main(argv: list[str]) -> int:
    """Write the project named on the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m runner.new", description=__doc__)
    parser.add_argument("dir", type=Path, help="the project's folder (new, or empty)")
    args = parser.parse_args(argv)
    try:
        written = write_project(args.dir)
    except (ValueError, OSError) as err:
        print(f"runner.new: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} files to {args.dir}/:")
    for path in written:
        print(f"  {path.relative_to(args.dir)}")
    print(f"next: cd {args.dir} && runner experiment=mine")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
