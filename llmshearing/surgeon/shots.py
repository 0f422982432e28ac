"""The multi-shot LLM Surgeon loop, in place on a model.

Each shot, for a target density on the linear schedule:
1. curvature per layer (K-FAC factors from the calibration set, one block of layers at a time) and
   the cost of every prunable structure/weight;
2. one global selection over all layers (the pruner: structured or sparse);
3. removal with correlated weight updates, layer by layer;
4. optionally a short fine-tuning (not after the last shot).
When all layers fit the factor budget, the factors of step 1 are kept for step 3; otherwise they
are freed block by block and estimated again (on the partly updated model) for the updates.
A pruner that does not select globally (2:4/unstructured with allocation ``matrix``) does 1-3
block by block instead: each block's curvature is estimated on the model whose earlier blocks are
already pruned, and each layer's curvature is made and freed as the layer is pruned. With
``--curvature sequential`` (their default) the blocks are single layers and the curvature is the
input factor A from forward passes through the already pruned layers (SparseGPT's calibration),
with each row's cost scaled by the K-FAC output curvature 1/[G⁻¹]_ii of one G-only pass per shot.
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
from llmshearing.surgeon.curvature import DampedFactor, IdentityCurvature, KroneckerCurvature
from llmshearing.surgeon.finetune import finetune
from llmshearing.surgeon.kfac import (LOSS_CHUNK_TOKENS, MICRO_BATCH_TOKENS, PROJECTIONS, BlockCurvatures,
                                      estimate_factors, input_owner, output_scales, sequential_input_factors)
from llmshearing.surgeon.memory import factor_budget, peak_estimate, process_bytes, sequential_estimate
from llmshearing.surgeon.report import achieved_density
from llmshearing.surgeon.settings import CURVATURE, STRUCTURED, TWO_FOUR, SurgeonSettings
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
    memory_estimate: str = ""
    memory_estimate_bytes: int = 0


def make_pruner(config, settings: SurgeonSettings):
    """The pruner for ``settings``; a ``--target`` fixes ``settings.density`` from the shape here."""
    if settings.mode == STRUCTURED:
        return StructuredPruning(config, settings.attention_unit, uniform=settings.uniform,
                                 target=settings.resolve_target(config))
    return SparsePruning(config, settings.mode, settings.allocation, settings.row_scaled)


def layer_curvatures(model: LlamaForCausalLM, batches: Sequence[torch.Tensor], layers: Sequence[int],
                     settings: SurgeonSettings):
    """Curvature per projection of ``layers`` ({layer: {projection: curvature}}): K-FAC estimates (made
    per layer when first asked for, see ``BlockCurvatures``), or I ⊗ I for the magnitude baseline."""
    if settings.scoring != CURVATURE:
        return {index: defaultdict(IdentityCurvature) for index in layers}
    return BlockCurvatures(estimate_factors(model, batches, layers, progress=settings.progress), settings.damping)


def _layer_blocks(model: LlamaForCausalLM, settings: SurgeonSettings, run: SurgeonRun, say,
                  keeps_inverses: bool = True) -> List[List[int]]:
    """Blocks of layers whose factors fit the memory budget (one block for the magnitude baseline)."""
    all_layers = list(range(model.config.num_hidden_layers))
    if settings.scoring != CURVATURE:
        return [all_layers]
    budget = factor_budget(model.config, model.lm_head.weight.device, settings.factor_memory_gb, keeps_inverses)
    run.factor_memory = budget.describe()
    say(run.factor_memory)
    if budget.warning():
        print(budget.warning(), file=sys.stderr, flush=True)
    return budget.blocks(all_layers)


def _prune_shot(pruner, layers, blocks: List[List[int]], curvatures_of: Callable, density: float, label: str,
                progress: bool) -> None:
    """Costs of every layer, one global selection, then removal with updates layer by layer (or, for a
    pruner that selects per layer, each block's curvature, then each of its layers pruned alone)."""
    if not pruner.selects_globally:
        for block in blocks:
            block_curvatures = curvatures_of(block)
            for index in tqdm(block, desc=f"  {label} prune", unit="layer", leave=False, disable=not progress):
                pruner.prune_layer(index, layers[index], block_curvatures.pop(index), density)
            del block_curvatures
        return
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


class _OutputFactor:
    """The output side of the sequential curvature: G = I, or (row-scaled costs) a diagonal G⁻¹ holding
    the K-FAC [G⁻¹]_ii; only its inverse's diagonal is read (by the weight costs)."""

    def __init__(self, size: int, device, scale: Optional[torch.Tensor] = None):
        self.inverse = torch.eye(size, device=device) if scale is None else torch.diag(1.0 / scale.to(device))
        self.matrix = torch.eye(size, device=device) if scale is None else torch.diag(scale.to(device))


def _prune_sequentially(model: LlamaForCausalLM, batches, pruner, settings: SurgeonSettings, density: float) -> None:
    """One shot of ``--curvature sequential``: each layer pruned with F = I ⊗ A (row-scaled: diag(G) ⊗ A,
    G from a K-FAC pass over this shot's model), A from the inputs that reach it through the already
    pruned layers before it."""
    # one 2:4 shot to density 0.5 picks two of four weights of a row: the row's scale cannot change the choice
    row_scales = settings.row_scaled and not (settings.mode == TWO_FOUR and density <= 0.5)
    scales = output_scales(model, batches, settings.damping, settings.progress) if row_scales else {}

    def prune(index: int, inputs) -> None:
        layer = model.model.layers[index]
        damped = {owner: DampedFactor(a, settings.damping) for owner, a in inputs.items()}
        curvatures = {}
        for name in PROJECTIONS:
            weight = layer.get_submodule(name).weight
            scale = scales.get(index, {}).pop(name, None)
            curvatures[name] = KroneckerCurvature(damped[input_owner(name)],
                                                  _OutputFactor(weight.shape[0], weight.device, scale))
        pruner.prune_layer(index, layer, curvatures, density)

    sequential_input_factors(model, batches, prune, progress=settings.progress)


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
    device = model.lm_head.weight.device
    sequential = settings.sequential and not pruner.selects_globally
    if sequential:
        blocks = None
        estimate = sequential_estimate(model.config, start=process_bytes(device), seq_len=int(batches[0].shape[1]),
                                       micro_batch_tokens=MICRO_BATCH_TOKENS,
                                       calibration_tokens=sum(batch.numel() for batch in batches),
                                       row_scaled=settings.row_scaled and (settings.mode != TWO_FOUR or settings.shots > 1),
                                       loss_chunk_tokens=LOSS_CHUNK_TOKENS)
    else:
        blocks = _layer_blocks(model, settings, run, say, keeps_inverses=pruner.selects_globally)
        estimate = peak_estimate(model.config, start=process_bytes(device), layers_per_block=max(map(len, blocks)),
                                 seq_len=int(batches[0].shape[1]), micro_batch_tokens=MICRO_BATCH_TOKENS,
                                 loss_chunk_tokens=LOSS_CHUNK_TOKENS, mode=settings.mode,
                                 global_selection=pruner.selects_globally, curvature=settings.scoring == CURVATURE)
    run.memory_estimate, run.memory_estimate_bytes = estimate.describe(), estimate.total
    say(run.memory_estimate)
    schedule = settings.schedule()
    for shot, density in enumerate(tqdm(schedule, desc="shots", disable=not settings.progress), start=1):
        started = time.perf_counter()
        if sequential:
            _prune_sequentially(model, batches, pruner, settings, density)
            shot_blocks = None
        elif shot == 1 and initial_curvatures is not None:
            # a dict of its own: pruners that take layers one by one pop them, the caller's mapping stays whole
            shot_blocks = [sorted(initial_curvatures)]
            curvatures_of = lambda block: {index: initial_curvatures[index] for index in block}  # noqa: E731
        else:
            shot_blocks, curvatures_of = blocks, lambda block: layer_curvatures(model, batches, block, settings)
        if shot_blocks is not None:
            _prune_shot(pruner, model.model.layers, shot_blocks, curvatures_of, density, f"shot {shot}",
                        settings.progress)
        record = ShotRecord(shot, density, achieved_density(pruner, model.config), 0.0)
        if settings.finetune_steps and shot < len(schedule):
            record.finetune_loss = finetune(model, batches, settings.finetune_steps, settings.finetune_lr,
                                            after_step=lambda: pruner.zero(model), progress=settings.progress)
        record.seconds = time.perf_counter() - started
        run.shots.append(record)
        say(f"shot {shot}/{len(schedule)}: target density {density:.4f}, density {record.density:.4f}, "
            f"{record.seconds:.1f} s")
    return run
