"""Hard-concrete gates (Louizos et al. 2018): a differentiable relaxation of 0/1 masks."""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

STRETCH_LOW = -0.1  # l
STRETCH_HIGH = 1.1  # r
TEMPERATURE = 2.0 / 3.0  # beta
EPS = 1e-6
# sigmoid(log_alpha / beta * 0.8): the reference's value for a kept unit in the deterministic mask
SOFT_VALUE_SHARPNESS = 0.8
DEFAULT_LOG_ALPHA_RANGE = (math.log(0.01), math.log(100.0))


class HardConcrete(nn.Module):
    """One gate per element of a mask tensor of ``shape``, parameterised by ``log_alpha``."""

    def __init__(
        self,
        shape: Union[int, Sequence[int]],
        *,
        init_mean: float = 5.0,
        init_std: float = 0.01,
        log_alpha_range: Tuple[float, float] = DEFAULT_LOG_ALPHA_RANGE,
    ):
        super().__init__()
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.log_alpha = nn.Parameter(torch.empty(shape))
        self.log_alpha_range = tuple(log_alpha_range)
        nn.init.normal_(self.log_alpha, mean=init_mean, std=init_std)
        self.clamp_()  # init_mean 5 is above the range: training starts from the bound, as in the reference

    @property
    def shape(self) -> torch.Size:
        return self.log_alpha.shape

    def sample(self, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """A stochastic mask in [0, 1] with exact zeros and ones; differentiable in ``log_alpha``."""
        u = torch.empty_like(self.log_alpha).uniform_(EPS, 1.0 - EPS, generator=generator)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / TEMPERATURE)
        return (s * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW).clamp(0.0, 1.0)

    def keep_probability(self) -> torch.Tensor:
        """P(gate > 0): the differentiable expected-size score of each unit."""
        return 1.0 - torch.sigmoid(TEMPERATURE * math.log(-STRETCH_LOW / STRETCH_HIGH) - self.log_alpha)

    def soft_values(self) -> torch.Tensor:
        """The value a kept unit gets in the deterministic mask."""
        return torch.sigmoid(self.log_alpha / TEMPERATURE * SOFT_VALUE_SHARPNESS)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_alpha.clamp_(*self.log_alpha_range)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, log_alpha_range={self.log_alpha_range}"
