"""The in-memory and DataLoader paths give the same batches and metrics."""

from __future__ import annotations

import torch

from runner.components.datasets.xor import xor
from runner.loop import epoch_batches
from tests.configs import shipped, train


def test_both_paths_cut_identical_batches():
    x = torch.arange(22, dtype=torch.float32).reshape(11, 2)
    y = torch.arange(11)
    order = torch.randperm(11, generator=torch.Generator().manual_seed(3))
    cpu = torch.device("cpu")
    memory = list(epoch_batches(x, y, order, 4, "memory", cpu))
    loader = list(epoch_batches(x, y, order, 4, "loader", cpu))
    assert [len(b[1]) for b in memory] == [4, 4, 3]
    assert len(memory) == len(loader)
    for (xm, ym), (xl, yl) in zip(memory, loader, strict=True):
        assert torch.equal(xm, xl) and torch.equal(ym, yl)
    assert torch.equal(torch.cat([b[1] for b in memory]), order)  # same order as the perm
    workers = list(epoch_batches(x, y, order, 4, "loader", cpu, num_workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(memory, workers, strict=True))


def test_both_paths_give_identical_metrics():
    cfg = shipped("xor_deep", "adam", epochs=5)
    cfg["trainer"]["data_path"] = "memory"
    memory = train(cfg)
    cfg["trainer"]["data_path"] = "loader"
    assert train(cfg) == memory


def test_auto_path_streams_data_too_large_for_the_memory_left(monkeypatch):
    from runner import loop

    data = xor()  # 100 x 2 floats + 100 targets: 1,200 bytes
    assert loop.available_host_memory() > 1 << 20  # read from /proc/meminfo
    assert loop.choose_data_path("auto", data, torch.device("cpu")) == "memory"
    monkeypatch.setattr(loop, "available_host_memory", lambda: 4000)
    assert loop.choose_data_path("auto", data, torch.device("cpu")) == "loader"
    assert loop.choose_data_path("memory", data, torch.device("cpu")) == "memory"
    monkeypatch.setattr(loop, "available_host_memory", lambda: None)  # not Linux
    assert loop.choose_data_path("auto", data, torch.device("cpu")) == "memory"
