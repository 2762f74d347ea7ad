"""Custom losses, registered like torch's own."""

from __future__ import annotations

import torch
from torch import nn


class OneHotMSELoss(nn.Module):
    """The book's ch. 11 loss: squared error against one-hot targets, summed over classes
    and averaged over samples (its gradient is 2 (a - y) / n, as the NumPy MLP computes)."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of sum over classes of (output - onehot(target))^2."""
        onehot = nn.functional.one_hot(target.long(), output.shape[-1]).to(output.dtype)
        return (output - onehot).pow(2).sum(dim=-1).mean()
