"""How close the L0 masks came to the target shape by the end of pruning.

The final plan keeps exactly the target counts whatever the gates say (the top ``log_alpha`` of each
structure). When pruning stops before the Lagrangian has brought the expected sizes down to the
target (a short run, a small ``lag_lr``), that top-k cut removes units whose gates still keep them,
and the sliced model starts CPT far worse than the masked model trained. The other way round, when
the gates overshoot (more shut than the target cuts), the plan keeps units whose gates are shut, at
the small scales their soft values give. This module measures both,
per pruned structure, and words the warning the plan carries (``PruningPlan.warning()``), so the run
and the export can say so instead of leaving it to be guessed from a bad perplexity.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional

import torch

DEFAULT_TOLERANCE = 0.05  # of the source's units: how far above its target a structure may end


@dataclass(frozen=True)
class StructureConvergence:
    structure: str
    expected_fraction: float  # Σ keep scores / source units (L0Module.keep_scores), what the Lagrangian saw
    target_fraction: float
    cut: int  # units the final plan removes
    cut_while_open: int  # of those, units whose gate still keeps them (keep score > 0.5)
    kept_while_shut: int  # units the plan keeps whose gates were shut (keep score <= 0.5): kept at small scales

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def mask_convergence(l0, selection=None) -> List[StructureConvergence]:
    """One entry per structure the L0Module prunes (its final, not warmed-up, target); ``selection``:
    ``l0.selection()`` when the caller has it already."""
    selection = (selection or l0.selection()).to("cpu")
    open_gate = {name: p.cpu() > 0.5 for name, p in l0.keep_scores().items()}
    kept = {
        "layer": selection.layer_keep, "kv_group": selection.kv_keep, "head": selection.head_keep,
        "intermediate": selection.neuron_keep, "hidden": selection.hidden_keep,
    }
    cut = {name: ~keep for name, keep in kept.items()}
    cut["head"] &= l0.expand_groups(selection.kv_keep)  # a removed group's heads are counted under kv_group
    expected, targets = l0.expected_sizes(), l0.target_fractions()
    return [StructureConvergence(name, float(expected[name]), float(targets[name]), int(cut[name].sum()),
                                 int((cut[name] & open_gate[name]).sum()), int((kept[name] & ~open_gate[name]).sum()))
            for name in l0.structures]


def convergence_warning(report: List[StructureConvergence], tolerance: float = DEFAULT_TOLERANCE) -> Optional[str]:
    """A one-line warning naming the structures that ended off their target; None if all reached it."""
    behind = [r for r in report if r.expected_fraction - r.target_fraction > tolerance]
    beyond = [r for r in report if r.target_fraction - r.expected_fraction > tolerance]
    problems = []
    if behind:
        details = "; ".join(
            f"{r.structure} at {r.expected_fraction:.2f} of the source vs target {r.target_fraction:.2f} "
            f"({r.cut_while_open} of the {r.cut} units cut still had open gates)" for r in behind)
        problems.append(f"the masks had not reached the target shape when pruning ended: {details}. The slice keeps "
                        "the target counts anyway, so expect a loss jump after slicing; prune for more steps or raise "
                        "pruning.lag_lr")
    if beyond:
        details = "; ".join(
            f"{r.structure} at {r.expected_fraction:.2f} of the source vs target {r.target_fraction:.2f} "
            f"({r.kept_while_shut} of the units kept had shut gates)" for r in beyond)
        problems.append(f"the masks shut more than the target when pruning ended: {details}. The slice keeps those "
                        "units at the small scales their gates give; lower pruning.lag_lr or prune for more steps")
    return ". Also, ".join(problems) or None
