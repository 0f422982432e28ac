"""Per-domain next-token loss: summed per sample (training batches) or per domain (eval splits).

Losses are kept as (sum of token losses, number of tokens) pairs so that they can be added up
over batches and ranks before dividing; a domain's loss is then the mean over its tokens.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from llmshearing.errors import ConfigError
from llmshearing.model.composer_model import IGNORE_INDEX, next_token_targets
from llmshearing.model.next_token_loss import LossHeadOutput


def sample_token_losses(outputs, batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample of ``batch``: (sum of next-token losses, number of scored tokens), from the model's
    outputs (a ``LossHeadOutput`` or logits)."""
    targets = next_token_targets(batch)
    if isinstance(outputs, LossHeadOutput):
        if outputs.token_nll is None:
            raise ConfigError("per-sample losses (dynamic_loading.loss_source: train) are not available from "
                              "a fused loss kernel: set model.loss_kernel: torch")
        return outputs.token_nll.detach().sum(dim=1).double(), (targets != IGNORE_INDEX).sum(dim=1).double()
    logits = outputs
    # one sample at a time: the fp32 copy of the logits stays one sequence long
    sums = torch.stack([F.cross_entropy(row[:-1].float(), target, ignore_index=IGNORE_INDEX,
                                        reduction="sum") for row, target in zip(logits, targets)])
    return sums.double(), (targets != IGNORE_INDEX).sum(dim=1).double()


@torch.no_grad()
def domain_loss_sums(model: Callable, loaders: Sequence[Iterable],
                     prepare: Callable = lambda batch: batch,
                     before_domain: Optional[Callable[[int], None]] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(token-loss sums, token counts) per domain, one loader per domain, ``model(batch)`` → its outputs.

    ``prepare`` moves a batch to the model's device; ``before_domain(i)`` runs before domain i
    (e.g. to reseed the random masks so every domain is scored with the same mask samples).
    """
    sums, counts = [], []
    for index, loader in enumerate(loaders):
        if before_domain is not None:
            before_domain(index)
        total = count = 0.0
        for batch in loader:
            batch = prepare(batch)
            loss_sum, tokens = sample_token_losses(model(batch), batch)
            total, count = total + loss_sum.sum(), count + tokens.sum()
        sums.append(torch.as_tensor(total, dtype=torch.float64).cpu())
        counts.append(torch.as_tensor(count, dtype=torch.float64).cpu())
    return torch.stack(sums), torch.stack(counts)
