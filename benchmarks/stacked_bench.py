"""A seed group trained one run after another (`runner.loop.fit`) against the same group
trained as one stacked model (`runner.sweep.stacked.stack_fit`), on one thread.

XOR, the shipped xor_deep model with Adam (lr 0.015, L1 on its second layer), batch 2.
Only training is timed (each job's `setup` is done beforehand for both ways). The solo
runs can be timed on the first `--solo` seeds only and extrapolated to all of them; the
output says when it is. Stacked is timed on each forward path named by `--paths`: `fast`
(batched matmul, the default where the model allows it) and `vmap` (vmap over
functional_call). Run from the repo root:

    .venv/bin/python benchmarks/stacked_bench.py            # 100 seeds x 200 epochs
    .venv/bin/python benchmarks/stacked_bench.py --quick    # 18 seeds x 20 epochs
    .venv/bin/python benchmarks/stacked_bench.py --paths fast --solo 1
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from runner.components.plugins import load_components
from runner.config.project import CONF_DIR
from runner.config.spec import validate
from runner.job import Job, setup
from runner.loop import fit
from runner.sweep.stacked import MemberResult, stack_fit


def xor_config(seed: int, epochs: int) -> dict[str, Any]:
    """The default config's XOR run (xor_deep, adam) with this seed, no tracking."""
    main = OmegaConf.load(CONF_DIR / "config.yaml")
    trainer = OmegaConf.to_container(main.trainer)
    trainer |= {"epochs": epochs, "progress": "none", "threads": 1}
    cfg = OmegaConf.create(
        {
            "seed": seed,
            "device": "cpu",
            "trainer": trainer,
            "model": OmegaConf.load(CONF_DIR / "model" / "xor_deep.yaml"),
            "data": OmegaConf.load(CONF_DIR / "data" / "xor.yaml"),
            "optim": OmegaConf.merge(OmegaConf.load(CONF_DIR / "optim" / "adam.yaml"), main.optim),
        }
    )
    return OmegaConf.to_container(cfg, resolve=True)


def make_jobs(seeds: list[int], epochs: int) -> list[Job]:
    """One set-up job per seed (weights and batch order from its own seed)."""
    jobs = []
    for seed in seeds:
        cfg = xor_config(seed, epochs)
        jobs.append(setup(cfg, validate(cfg)))
    return jobs


def main() -> None:
    """Time solo and each stacked path; print seconds, ratios and final-metric differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--solo", type=int, default=10, help="seeds timed solo (0: all)")
    parser.add_argument("--quick", action="store_true", help="18 seeds x 20 epochs, all solo")
    parser.add_argument(
        "--paths", default="vmap,fast", help="stacked forward paths to time, comma-separated"
    )
    args = parser.parse_args()
    paths = args.paths.split(",")
    if not set(paths) <= {"vmap", "fast"}:
        parser.error(f"--paths: {args.paths!r}; choose from vmap, fast")
    if args.quick:
        args.seeds, args.epochs, args.solo = 18, 20, 0
    load_components([])
    seeds = list(range(1, args.seeds + 1))
    solo_seeds = seeds if args.solo <= 0 else seeds[: args.solo]

    solo_jobs = make_jobs(solo_seeds, args.epochs)
    torch.set_num_threads(1)
    started = time.perf_counter()
    solo_final = [fit(j.parts, j.data, j.generator)[-1] for j in solo_jobs]
    solo_seconds = time.perf_counter() - started

    timed: dict[str, tuple[float, list[MemberResult]]] = {}
    for path in paths:
        stacked_jobs = make_jobs(seeds, args.epochs)  # fresh weights and generators per path
        torch.set_num_threads(1)
        started = time.perf_counter()
        results = stack_fit(stacked_jobs, fast_path=path == "fast")
        timed[path] = (time.perf_counter() - started, results)

    estimate = solo_seconds * len(seeds) / len(solo_seeds)
    print(f"XOR xor_deep adam, batch 2, {len(seeds)} seeds x {args.epochs} epochs, 1 thread")
    if len(solo_seeds) < len(seeds):
        print(
            f"solo:          {estimate:8.2f} s  (extrapolated: {len(solo_seeds)} seeds timed, "
            f"{solo_seconds:.2f} s, x {len(seeds) / len(solo_seeds):g})"
        )
    else:
        print(f"solo:          {estimate:8.2f} s  (every seed run)")
    for path, (seconds, results) in timed.items():
        failed = sum(r.failed_at is not None for r in results)
        print(
            f"stacked {path:5s} {seconds:8.2f} s  ({failed} members failed)  "
            f"solo/stacked {estimate / seconds:5.1f}x"
        )
    if len(timed) == 2:
        print(f"vmap/fast:     {timed['vmap'][0] / timed['fast'][0]:8.2f}x")
    for path, (_, results) in timed.items():
        finals = [r.history[-1] for r in results]
        diff = max(
            abs(a["val_acc"] - b["val_acc"]) for a, b in zip(solo_final, finals, strict=False)
        )
        loss = max(
            abs(a["val_loss"] - b["val_loss"]) for a, b in zip(solo_final, finals, strict=False)
        )
        print(
            f"{path}: max |final val_acc difference| over the {len(solo_seeds)} seeds run "
            f"both ways: {diff:.3g} (val_loss: {loss:.3g})"
        )
    if len(timed) == 2:
        pairs = zip(timed["vmap"][1], timed["fast"][1], strict=True)
        loss = max(abs(a.history[-1]["val_loss"] - b.history[-1]["val_loss"]) for a, b in pairs)
        print(f"vmap vs fast: max |final val_loss difference| over {len(seeds)} seeds: {loss:.3g}")


if __name__ == "__main__":
    main()
