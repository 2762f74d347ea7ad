"""How a sweep's stacked groups are cut into chunks and shared among worker processes.

A chunk is what one `runner.sweep.stacked.stack_fit` call trains: at most `sweep.stack_max`
members, or by default as many as fit in half the free memory and, on a CPU, as many whose
weights, gradients and optimizer moments stay within a core's share of half the largest
cache (a stack that spills out of it is slower per member than smaller ones side by side:
BENCHMARKS.md, issue 12). Chunks are independent; `share` deals them out to worker
processes, the costliest first.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from runner.training.device import usable_cores

if TYPE_CHECKING:
    from runner.job import Job

CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")  # Linux: one indexN folder per cache
# A stacked step's fixed cost (Python and kernel dispatch), in member-parameters of work: a
# step of ten 37-parameter members and one of a single 80k-parameter member take about the
# same time on a CPU.
STEP_OVERHEAD_PARAMS = 80_000


def state_bytes(job: Job) -> int:
    """The bytes one member's weights, gradients and two optimizer moments take."""
    return 4 * sum(p.numel() * p.element_size() for p in job.parts.model.parameters())


def member_bytes(job: Job) -> int:
    """About how much memory one member adds to a stack: its weights, gradients and two
    optimizer moments, its shuffled copy of the training data, its epoch's outputs."""
    data = job.data
    copies = sum(x.numel() * x.element_size() for x in (data.x_train, data.y_train))
    outputs = (len(data.x_train) + len(data.x_val)) * max(1, data.num_outputs) * 4
    return state_bytes(job) + copies + outputs


def free_memory(device: torch.device) -> int:
    """Bytes free now on `device` (CUDA: the GPU's; else the machine's available RAM)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf: assume a small machine
        return 4 * 2**30


def cache_bytes(cache_dir: Path = CACHE_DIR) -> int | None:
    """The size of the CPU's largest cache (its last level), or None where unknown."""
    sizes = []
    for index in cache_dir.glob("index*"):
        try:
            text = (index / "size").read_text().strip().upper()
        except OSError:
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes) if sizes else None


def chunk_sizes(
    jobs: Sequence[Job], stack_max: int, cache: int | None = -1, cores: int | None = None
) -> list[int]:
    """How many members each chunk of a group trains: `stack_max` each, or (0) as many as
    fit in half the free memory and, on a CPU, in a core's share of half the largest cache
    (so that chunks training side by side on every core stay in it), evened out: ten
    members of which three fit train as 3 + 3 + 2 + 2. A member too big for that share
    trains alone (stacking it with others would gain nothing). `cache`: that cache's bytes
    (-1: the machine's); `cores`: the cores sharing it (None: this process's)."""
    n = len(jobs)
    if stack_max:
        return [min(stack_max, n - start) for start in range(0, n, stack_max)]
    device = jobs[0].parts.device
    size = max(1, free_memory(device) // 2 // member_bytes(jobs[0]))
    if device.type == "cpu":
        cache = cache_bytes() if cache == -1 else cache
        if cache:
            share = cache // 2 // (cores or usable_cores())
            size = min(size, max(1, share // max(1, state_bytes(jobs[0]))))
    count = math.ceil(n / size)
    return [n // count + (1 if i < n % count else 0) for i in range(count)]


def chunk_cost(jobs: Sequence[Job]) -> float:
    """About how long a chunk trains, in member-parameter steps (only to compare chunks)."""
    t = jobs[0].parts
    steps = t.epochs * math.ceil(len(jobs[0].data.x_train) / t.batch_size)
    params = sum(p.numel() for p in t.model.parameters())
    return steps * (STEP_OVERHEAD_PARAMS + len(jobs) * params)


def share(costs: Sequence[float], workers: int) -> list[list[int]]:
    """Indices of `costs` dealt out to `workers` so that the busiest has least to do: the
    costliest first, each to the worker with the least so far (each list in input order)."""
    loads = [(0.0, w) for w in range(max(1, workers))]
    shares: list[list[int]] = [[] for _ in loads]
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        load, w = heapq.heappop(loads)
        shares[w].append(i)
        heapq.heappush(loads, (load + costs[i], w))
    return [sorted(s) for s in shares if s]
