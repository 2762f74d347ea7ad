"""Device choice: `auto` takes cuda, then mps, then cpu; an explicit device must exist."""

from __future__ import annotations

import os

import torch


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


def thread_count(setting: int | str, parallel_jobs: int = 1) -> int:
    """Torch intra-op threads: `auto` shares this process's cores among parallel jobs."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, parallel_jobs))
