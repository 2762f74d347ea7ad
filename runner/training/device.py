"""Where a job computes: the device (`auto` takes cuda, then mps, then cpu; an explicit
device must exist) and how many CPU threads torch uses."""

from __future__ import annotations

import os

import torch

# Models this large spend their steps in multi-threaded kernels; smaller ones (XOR's 37
# parameters) are bound by Python on one core, where extra threads only spin.
KERNEL_BOUND_PARAMS = 10_000


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def device_problem(name: str) -> str | None:
    """Why device `name` cannot be used here, or None when it can."""
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"{name!r} asked for, but CUDA is not available here; allowed: auto, cpu"
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            return f"{name!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)"
    if name == "mps" and not _mps_available():
        return "'mps' asked for, but Apple MPS is not available here; allowed: auto, cpu"
    return None


def resolve_device(name: str) -> torch.device:
    """Turn a validated device name into a torch.device, resolving `auto`."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    return torch.device(name)


def usable_cores() -> int:
    """The CPU cores this process may run on (a Slurm job's, not the whole node's)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def thread_count(setting: int | str, parallel_jobs: int = 1) -> int:
    """Torch intra-op threads: `auto` shares this process's cores among parallel jobs."""
    if setting != "auto":
        return int(setting)
    return max(1, usable_cores() // max(1, parallel_jobs))


def set_threads(setting: int | str, parallel_jobs: int = 1, params: int | None = None) -> None:
    """Apply `trainer.threads`: `auto` shares the cores among parallel jobs, and gives a
    model known (`params`) to be small one thread."""
    threads = thread_count(setting, parallel_jobs)
    if setting == "auto" and params is not None and params < KERNEL_BOUND_PARAMS:
        threads = 1
    torch.set_num_threads(threads)


def is_kernel_bound(params: int) -> bool:
    """Whether a model's steps run in multi-threaded kernels (and so suffer from a process
    busy beside them) rather than in Python."""
    return params >= KERNEL_BOUND_PARAMS and torch.get_num_threads() > 1
