"""Architecture search: prune the source to every candidate shape with the same importance scores,
rank the candidates by eval loss (optionally after a short distillation run for the best few) and
write the ranking as search.md / search.csv.

Ranking: candidates that were retrained come first, by loss after retraining; the rest follow by
loss right after pruning. The loss is the token-weighted eval loss over all domains.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from llmshearing.eval.perplexity import evaluate_domains
from llmshearing.minitron.candidates import shape_parameters
from llmshearing.minitron.importance import Importance
from llmshearing.minitron.retrain import short_training
from llmshearing.minitron.selection import build_plan
from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.plan import PruningPlan
from llmshearing.shape import TargetShape
from llmshearing.slicing import slice_model

log = logging.getLogger(__name__)

RANKING_MD, RANKING_CSV = "search.md", "search.csv"
COLUMNS = ("rank", "hidden_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
           "intermediate_size", "parameters", "loss_pruned", "loss_retrained")


@dataclass
class Candidate:
    shape: TargetShape
    parameters: int
    plan: PruningPlan
    loss_pruned: float
    loss_retrained: Optional[float] = None
    model: Optional[LlamaForCausalLM] = None  # kept only for retrained candidates

    def sort_key(self):
        if self.loss_retrained is not None:
            return (0, self.loss_retrained)
        return (1, self.loss_pruned)

    def row(self, rank: int) -> dict:
        values = {"rank": rank, **self.shape.to_dict(), "parameters": self.parameters,
                  "loss_pruned": round(self.loss_pruned, 4),
                  "loss_retrained": "" if self.loss_retrained is None else round(self.loss_retrained, 4)}
        return {k: values[k] for k in COLUMNS}


@dataclass
class SearchSettings:
    data_dir: str
    seq_len: Optional[int] = None
    batch_size: int = 8
    eval_batches: Optional[int] = 4
    depth_metric: str = "block_importance"
    depth_selection: str = "top"
    retrain_top: int = 0
    retrain_steps: int = 0
    retrain_lr: float = 1e-4
    seed: int = 0
    device: str = "cpu"


def _eval_loss(model: LlamaForCausalLM, settings: SearchSettings) -> float:
    results = evaluate_domains(model, settings.data_dir, seq_len=settings.seq_len, batch_size=settings.batch_size,
                               max_batches=settings.eval_batches)
    return results["all"].loss


def search(source: LlamaForCausalLM, importance: Importance, shapes: List[TargetShape],
           settings: SearchSettings) -> List[Candidate]:
    """Candidates ranked best first; retrained ones carry their trained model."""
    candidates = []
    for shape in shapes:
        plan = build_plan(importance, shape, depth_metric=settings.depth_metric,
                          depth_selection=settings.depth_selection)
        loss = _eval_loss(slice_model(source, plan), settings)
        candidates.append(Candidate(shape, shape_parameters(shape, source.config), plan, loss))
        log.info("candidate %s: eval loss %.4f after pruning", shape.to_dict(), loss)
    candidates.sort(key=Candidate.sort_key)
    if settings.retrain_top > 0 and settings.retrain_steps > 0:
        for candidate in candidates[:settings.retrain_top]:
            candidate.model = short_training(
                slice_model(source, candidate.plan), settings.data_dir, steps=settings.retrain_steps,
                batch_size=settings.batch_size, seq_len=settings.seq_len, lr=settings.retrain_lr,
                seed=settings.seed, device=settings.device, teacher=source)
            candidate.loss_retrained = _eval_loss(candidate.model, settings)
            log.info("candidate %s: eval loss %.4f after retraining", candidate.shape.to_dict(),
                     candidate.loss_retrained)
        candidates.sort(key=Candidate.sort_key)
    return candidates


def best_model(source: LlamaForCausalLM, best: Candidate) -> LlamaForCausalLM:
    return best.model if best.model is not None else slice_model(source, best.plan)


def write_ranking(candidates: List[Candidate], folder, budget: int) -> List[Path]:
    folder = Path(folder)
    rows = [c.row(rank) for rank, c in enumerate(candidates, start=1)]
    with open(folder / RANKING_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Minitron architecture search (budget {budget:,} parameters)", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(f"{r[k]:,}" if k == "parameters" else str(r[k]) for k in COLUMNS) + " |" for r in rows]
    lines += ["", "Loss: token-weighted eval loss over all domains. Rank 1 is exported in this directory."]
    (folder / RANKING_MD).write_text("\n".join(lines) + "\n")
    return [folder / RANKING_MD, folder / RANKING_CSV]
