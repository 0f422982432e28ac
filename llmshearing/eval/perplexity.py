"""Per-domain next-token loss and perplexity on a corpus's eval splits.

Loss is token-weighted: the sum of next-token negative log-likelihoods over every predicted token
of a domain divided by their number (each sequence of length T predicts T-1 tokens); perplexity is
exp(loss). The "all" entry weights every domain's tokens equally.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F

from llmshearing.model.llama import LlamaForCausalLM


@dataclass
class DomainResult:
    loss: float
    perplexity: float
    tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sequence_nll(model: LlamaForCausalLM, input_ids: torch.Tensor, masks=None) -> torch.Tensor:
    """Summed next-token NLL per sequence, shape [batch]."""
    logits = model(input_ids, masks)[:, :-1].float()
    targets = input_ids[:, 1:]
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return losses.view(targets.shape).sum(dim=1)


@torch.no_grad()
def evaluate_domains(
    model: LlamaForCausalLM,
    data_dir,
    domains: Optional[Sequence[str]] = None,
    *,
    seq_len: Optional[int] = None,
    batch_size: int = 8,
    max_batches: Optional[int] = None,
    masks=None,
    split: str = "eval",
) -> Dict[str, DomainResult]:
    """{domain: DomainResult, ..., "all": DomainResult} for ``model`` (a plain LlamaForCausalLM)."""
    from llmshearing.data.corpus import load_manifest
    from llmshearing.data.loaders import build_eval_dataloaders

    if split != "eval":
        raise ValueError("only the eval split is evaluated")
    manifest = load_manifest(data_dir)
    domains = list(domains or manifest["domains"])
    seq_len = seq_len or int(manifest["seq_len"])
    loaders = build_eval_dataloaders(data_dir, domains, batch_size=batch_size, seq_len=seq_len, max_batches=max_batches)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results, total_nll, total_tokens = {}, 0.0, 0
    for domain, loader in loaders.items():
        nll, tokens = 0.0, 0
        for batch in loader:
            ids = batch["input_ids"].to(device)
            nll += float(sequence_nll(model, ids, masks).sum())
            tokens += ids.shape[0] * (ids.shape[1] - 1)
        results[domain] = _result(nll, tokens)
        total_nll, total_tokens = total_nll + nll, total_tokens + tokens
    results["all"] = _result(total_nll, total_tokens)
    model.train(was_training)
    return results


def _result(nll: float, tokens: int) -> DomainResult:
    loss = nll / max(tokens, 1)
    return DomainResult(loss=loss, perplexity=math.exp(min(loss, 700.0)), tokens=tokens)


def format_table(results: Dict[str, DomainResult]) -> str:
    lines = [f"{'domain':<16}{'loss':>10}{'perplexity':>14}{'tokens':>12}"]
    for domain, r in results.items():
        lines.append(f"{domain:<16}{r.loss:>10.4f}{r.perplexity:>14.2f}{r.tokens:>12d}")
    return "\n".join(lines)
