"""Metrics of K stacked models at once equal each model's own."""

from __future__ import annotations

import pytest
import torch

from runner.training.metrics import TaskMetrics

K, ROWS = 4, 37
CASES = {
    "binary, probabilities": (TaskMetrics("binary", "probability"), (ROWS, 1), "binary"),
    "binary, logits": (TaskMetrics("binary", "logits"), (ROWS, 1), "binary"),
    "multiclass": (TaskMetrics("multiclass", "logits"), (ROWS, 5), "classes"),
    "regression": (TaskMetrics("regression", "value", 180_000.0, 80_000.0), (ROWS, 1), "value"),
    "regression, log-RMSE": (
        TaskMetrics("regression", "value", 180_000.0, 80_000.0, metric="log_rmse"),
        (ROWS, 1),
        "value",
    ),
}


def targets(kind: str, *lead: int) -> torch.Tensor:
    """Random targets of the kind a task trains on ([*lead, ROWS])."""
    if kind == "binary":
        return torch.randint(0, 2, (*lead, ROWS)).float()
    if kind == "classes":
        return torch.randint(0, 5, (*lead, ROWS))
    return torch.randn(*lead, ROWS)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_each_stacked_models_metrics_are_its_own(case: tuple) -> None:
    metrics, shape, kind = case
    torch.manual_seed(0)
    outputs = torch.randn(K, *shape)
    if metrics.output_kind == "probability":
        outputs = outputs.sigmoid()
    own = targets(kind, K)
    shared = targets(kind)
    each = metrics.compute_each(outputs, own)
    each_shared = metrics.compute_each(outputs, shared, shared=True)
    for k in range(K):
        assert each[k] == pytest.approx(metrics.compute(outputs[k], own[k]), rel=1e-12)
        assert each_shared[k] == pytest.approx(metrics.compute(outputs[k], shared), rel=1e-12)
    if kind != "value":
        assert each[0] == metrics.compute(outputs[0], own[0])  # counts: exactly equal
    assert metrics.compute_each(outputs[:, :0], shared[:0], shared=True) == [{}] * K
