"""The multi-shot LLM Surgeon loop, in place on a model.

Each shot, for a target density on the linear schedule:
1. curvature per layer (K-FAC factors from the calibration set, one block of layers at a time) and
   the cost of every prunable structure/weight;
2. one global selection over all layers (the pruner: structured or sparse);
3. removal with correlated weight updates, layer by layer;
4. optionally a short fine-tuning (not after the last shot).
When all layers fit the factor budget, the factors of step 1 are kept for step 3; otherwise they
are freed block by block and estimated again (on the partly updated model) for the updates.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from tqdm.auto import tqdm

from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.surgeon.curvature import IdentityCurvature
from llmshearing.surgeon.finetune import finetune
from llmshearing.surgeon.kfac import estimate_factors
from llmshearing.surgeon.memory import factor_budget
from llmshearing.surgeon.report import achieved_density
from llmshearing.surgeon.settings import CURVATURE, STRUCTURED, SurgeonSettings
from llmshearing.surgeon.sparse import SparsePruning
from llmshearing.surgeon.structured import StructuredPruning


@dataclass
class ShotRecord:
    shot: int
    target_density: float
    density: float
    seconds: float
    finetune_loss: float = None


@dataclass
class SurgeonRun:
    pruner: object  # StructuredPruning or SparsePruning, holding what was removed
    shots: List[ShotRecord] = field(default_factory=list)
    factor_memory: str = ""


def make_pruner(config, settings: SurgeonSettings):
    """The pruner for ``settings``; a ``--target`` fixes ``settings.density`` from the shape here."""
    if settings.mode == STRUCTURED:
        return StructuredPruning(config, settings.attention_unit, uniform=settings.uniform,
                                 target=settings.resolve_target(config))
    return SparsePruning(config, settings.mode)


def layer_curvatures(model: LlamaForCausalLM, batches: Sequence[torch.Tensor], layers: Sequence[int],
                     settings: SurgeonSettings) -> Dict[int, dict]:
    """Curvature per projection of ``layers``: K-FAC estimates, or I ⊗ I for the magnitude baseline."""
    if settings.scoring != CURVATURE:
        return {index: defaultdict(IdentityCurvature) for index in layers}
    factors = estimate_factors(model, batches, layers, progress=settings.progress)
    return {index: factors.pop(index).curvatures(settings.damping) for index in layers}


def _layer_blocks(model: LlamaForCausalLM, settings: SurgeonSettings, run: SurgeonRun, say) -> List[List[int]]:
    """Blocks of layers whose factors fit the memory budget (one block for the magnitude baseline)."""
    all_layers = list(range(model.config.num_hidden_layers))
    if settings.scoring != CURVATURE:
        return [all_layers]
    budget = factor_budget(model.config, model.lm_head.weight.device, settings.factor_memory_gb)
    run.factor_memory = budget.describe()
    say(run.factor_memory)
    if budget.warning():
        print(budget.warning(), file=sys.stderr, flush=True)
    return budget.blocks(all_layers)


def _prune_shot(pruner, layers, blocks: List[List[int]], curvatures_of: Callable, density: float, label: str,
                progress: bool) -> None:
    """Costs of every layer, one global selection, then removal with updates layer by layer."""
    costs, kept = {}, {}
    for block in blocks:
        block_curvatures = curvatures_of(block)
        for index in tqdm(block, desc=f"  {label} costs", unit="layer", leave=False, disable=not progress):
            costs[index] = pruner.layer_costs(layers[index], block_curvatures[index])
        if len(blocks) == 1:
            kept = block_curvatures
        del block_curvatures
    pruner.select(costs, density)
    del costs
    for block in blocks:
        block_curvatures = kept or curvatures_of(block)
        for index in tqdm(block, desc=f"  {label} update", unit="layer", leave=False, disable=not progress):
            pruner.apply(index, layers[index], block_curvatures[index])
        del block_curvatures


def run_surgeon(model: LlamaForCausalLM, batches: Sequence[torch.Tensor], settings: SurgeonSettings,
                say: Callable[[str], None] = print, initial_curvatures: Optional[Dict[int, dict]] = None) -> SurgeonRun:
    """Prune ``model`` in place to ``settings.density``; returns what was removed and per-shot records.

    ``initial_curvatures`` (from ``layer_curvatures`` of every layer of this same unpruned model) is
    used for the first shot instead of estimating it again, e.g. when pruning one source to several
    targets.
    """
    settings.validate()
    model.config.require_uniform("LLM Surgeon")
    pruner = make_pruner(model.config, settings)
    run = SurgeonRun(pruner)
    blocks = _layer_blocks(model, settings, run, say)
    schedule = settings.schedule()
    for shot, density in enumerate(tqdm(schedule, desc="shots", disable=not settings.progress), start=1):
        started = time.perf_counter()
        if shot == 1 and initial_curvatures is not None:
            shot_blocks, curvatures_of = [sorted(initial_curvatures)], lambda block: initial_curvatures
        else:
            shot_blocks, curvatures_of = blocks, lambda block: layer_curvatures(model, batches, block, settings)
        _prune_shot(pruner, model.model.layers, shot_blocks, curvatures_of, density, f"shot {shot}", settings.progress)
        record = ShotRecord(shot, density, achieved_density(pruner, model.config), 0.0)
        if settings.finetune_steps and shot < len(schedule):
            record.finetune_loss = finetune(model, batches, settings.finetune_steps, settings.finetune_lr,
                                            after_step=lambda: pruner.zero(model), progress=settings.progress)
        record.seconds = time.perf_counter() - started
        run.shots.append(record)
        say(f"shot {shot}/{len(schedule)}: target density {density:.4f}, density {record.density:.4f}, "
            f"{record.seconds:.1f} s")
    return run
