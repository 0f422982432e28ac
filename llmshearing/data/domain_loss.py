"""Per-domain next-token loss: summed per sample (training batches) or per domain (eval splits).

Losses are kept as (sum of token losses, number of tokens) pairs so that they can be added up
over batches and ranks before dividing; a domain's loss is then the mean over its tokens.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from llmshearing.model.composer_model import IGNORE_INDEX, next_token_targets


def sample_token_losses(logits: torch.Tensor, batch) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per sample of ``batch``: (sum of next-token losses, number of scored tokens)."""
    targets = next_token_targets(batch)
    # one sample at a time: the fp32 copy of the logits stays one sequence long
    sums = torch.stack([F.cross_entropy(row[:-1].float(), target, ignore_index=IGNORE_INDEX,
                                        reduction="sum") for row, target in zip(logits, targets)])
    return sums.double(), (targets != IGNORE_INDEX).sum(dim=1).double()


@torch.no_grad()
def domain_loss_sums(model: Callable, loaders: Sequence[Iterable],
                     prepare: Callable = lambda batch: batch,
                     before_domain: Optional[Callable[[int], None]] = None
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(token-loss sums, token counts) per domain, one loader per domain, ``model(batch)`` → logits.

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
