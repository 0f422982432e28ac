"""Sheared LLaMA: hard-concrete L0 masks that learn which units to keep for a target shape.

``hard_concrete`` one gate distribution; ``l0_module`` the masks of every structure, expected sizes, the
Lagrangian, the plan; ``noise`` their random stream; ``convergence`` how close they got; ``l0_pruning`` the
Composer algorithm that trains them; ``mask_plot`` their sizes over a run; ``l0_state`` a checkpoint's masks
rebuilt; ``cli`` ``llmshearing prune sheared``.
"""
from llmshearing.lazy_exports import lazy_exports

__all__ = ["HardConcrete", "L0Module", "L0Pruning", "MaskSizePlot"]
__getattr__, __dir__ = lazy_exports(__name__, {"HardConcrete": "hard_concrete", "L0Module": "l0_module",
                                               "L0Pruning": "l0_pruning", "MaskSizePlot": "mask_plot"})
