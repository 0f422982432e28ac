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
# a warm start's gates start at their bounds; at the reference's floor a shut gate still samples
# open in 4.7 % of the steps, at log 1e-4 in 0.05 % (fewer kept-shut units and lower loss, issue 16)
WARM_START_LOG_ALPHA_RANGE = (math.log(1e-4), math.log(1e4))


# log_alpha at which a gate is open (> 0) half the time
HALF_OPEN_LOG_ALPHA = TEMPERATURE * math.log(-STRETCH_LOW / STRETCH_HIGH)


def keep_probability_at(log_alpha: torch.Tensor) -> torch.Tensor:
    """P(gate > 0) of a gate with this ``log_alpha``."""
    return 1.0 - torch.sigmoid(HALF_OPEN_LOG_ALPHA - log_alpha)


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
        """P(gate > 0): the differentiable expected-size score of each unit (the reference's)."""
        return keep_probability_at(self.log_alpha)

    def keep_score(self) -> torch.Tensor:
        """P(gate > 0) rescaled over the clamp range: 0 at its lower bound, 1 at its upper.

        The clamp floors P(gate > 0) at ~0.047 (log_alpha = log 0.01), so a gate cannot count as
        shut in the reference's expected size: at a 25 % keep target the 75 % of units to cut add
        0.036 even when shut, and the Lagrangian meets the target only by pulling kept gates half
        shut, which the plan then keeps at scales down to 0.004 (issue 16). Rescaled, a gate at the
        floor counts 0, as the slice counts it."""
        low, high = (keep_probability_at(torch.tensor(bound)) for bound in self.log_alpha_range)
        # log_alpha beyond the range (set by hand, before the next clamp_) counts as the bound; the
        # gradient passes straight through, as a clamp would stop it at the bounds, where gates sit
        in_range = self.log_alpha.detach().clamp(*self.log_alpha_range) + (self.log_alpha - self.log_alpha.detach())
        return (keep_probability_at(in_range) - low) / (high - low)

    def soft_values(self) -> torch.Tensor:
        """The value a kept unit gets in the deterministic mask."""
        return torch.sigmoid(self.log_alpha / TEMPERATURE * SOFT_VALUE_SHARPNESS)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_alpha.clamp_(*self.log_alpha_range)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.shape)}, log_alpha_range={self.log_alpha_range}"
