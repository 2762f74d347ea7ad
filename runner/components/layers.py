"""Custom layers. Each is registered like any torch layer, to show users how to add theirs."""

from __future__ import annotations

import torch
from torch import nn


class NoisyLinear(nn.Module):
    """The book's (ch. 13) linear layer that adds Gaussian noise to its inputs in training only."""

    def __init__(self, in_features: int, out_features: int, noise_std: float = 0.1) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.noise_std = noise_std
        # Named weight/bias in nn.Linear's layout so the config's initializers apply to it.
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Affine map of the input, noised with N(0, noise_std^2) while training."""
        if self.training and self.noise_std > 0:
            x = x + torch.randn_like(x) * self.noise_std
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, noise_std={self.noise_std}"
