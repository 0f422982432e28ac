"""Per-domain next-token loss and perplexity on a corpus's eval splits.

Weighting (the same in ``python -m llmshearing.eval`` and in the training evaluators):
a domain's loss is token-weighted, the sum of next-token negative log-likelihoods over every
predicted token of that domain divided by their number (each sequence of length T predicts T-1
tokens); perplexity is exp(loss). The "all" entry pools the tokens of every domain, so each token
counts once and a domain weighs in proportion to its evaluated tokens (not a mean of domain means).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import torch

from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.model.loss_head import DEFAULT_CHUNK_TOKENS
from llmshearing.model.next_token_loss import NextTokenLoss

ALL = "all"


@dataclass
class DomainResult:
    loss: float
    perplexity: float
    tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def domain_result(nll: float, tokens: int) -> DomainResult:
    """Token-weighted result from a summed NLL over ``tokens`` predicted tokens."""
    loss = nll / max(tokens, 1)
    return DomainResult(loss=loss, perplexity=math.exp(min(loss, 700.0)), tokens=int(tokens))


def pooled_result(sums: Dict[str, tuple]) -> DomainResult:
    """The "all" entry from ``{domain: (nll sum, tokens)}``: every token counts once."""
    return domain_result(sum(nll for nll, _ in sums.values()), sum(tokens for _, tokens in sums.values()))


@torch.no_grad()
def sequence_nll(model: LlamaForCausalLM, input_ids: torch.Tensor, masks=None,
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> torch.Tensor:
    """Summed next-token NLL per sequence, shape [batch] (the logits made ``chunk_tokens`` at a time)."""
    outputs = model(input_ids, masks, head=NextTokenLoss(input_ids[:, 1:], chunk_tokens))
    return outputs.token_nll.sum(dim=1)


def split_loaders(data_dir, domains: Sequence[str], *, split: str, batch_size: int, seq_len: int,
                  max_batches: Optional[int] = None, max_samples: Optional[int] = None):
    """One unshuffled loader per domain over the first samples of its ``split`` (the eval loaders
    of training read the same samples in the same order)."""
    from llmshearing.data.loaders import build_eval_dataloaders

    if split == "eval" and max_samples is None:
        return build_eval_dataloaders(data_dir, domains, batch_size=batch_size, seq_len=seq_len,
                                      max_batches=max_batches)
    from torch.utils.data import DataLoader

    from llmshearing.data.loaders import open_eval_splits

    limits = [n for n in (max_samples, max_batches and max_batches * batch_size) if n]
    limit = min(limits) if limits else None
    return {domain: DataLoader(dataset, batch_size=batch_size, shuffle=False)
            for domain, dataset in open_eval_splits(data_dir, domains, seq_len, split, limit).items()}


@torch.no_grad()
def evaluate_domains(
    model: LlamaForCausalLM,
    data_dir,
    domains: Optional[Sequence[str]] = None,
    *,
    seq_len: Optional[int] = None,
    batch_size: int = 8,
    max_batches: Optional[int] = None,
    max_samples: Optional[int] = None,
    masks=None,
    split: str = "eval",
    loss_chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
) -> Dict[str, DomainResult]:
    """{domain: DomainResult, ..., "all": DomainResult} for ``model`` (a plain LlamaForCausalLM).

    ``max_batches`` / ``max_samples`` cap the samples read per domain (the first ones, in order);
    ``loss_chunk_tokens`` tokens' logits exist at a time (model/loss_head.py).
    """
    from llmshearing.data.corpus import load_manifest

    manifest = load_manifest(data_dir)
    domains = list(domains or manifest["domains"])
    seq_len = seq_len or int(manifest["seq_len"])
    loaders = split_loaders(data_dir, domains, split=split, batch_size=batch_size, seq_len=seq_len,
                            max_batches=max_batches, max_samples=max_samples)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = {}
    for domain, loader in loaders.items():
        nll, tokens = 0.0, 0
        for batch in loader:
            ids = batch["input_ids"].to(device)
            nll += float(sequence_nll(model, ids, masks, loss_chunk_tokens).sum())
            tokens += ids.shape[0] * (ids.shape[1] - 1)
        sums[domain] = (nll, tokens)
    model.train(was_training)
    results = {domain: domain_result(*pair) for domain, pair in sums.items()}
    results[ALL] = pooled_result(sums)
    return results


def format_table(results: Dict[str, DomainResult]) -> str:
    lines = [f"{'domain':<16}{'loss':>10}{'perplexity':>14}{'tokens':>12}"]
    for domain, r in results.items():
        lines.append(f"{domain:<16}{r.loss:>10.4f}{r.perplexity:>14.2f}{r.tokens:>12d}")
    return "\n".join(lines)
