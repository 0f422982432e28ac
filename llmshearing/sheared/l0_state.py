"""A checkpoint's L0 module (Sheared LLaMA masks), rebuilt from its ``l0.*`` state entries.

Export does not need it for checkpoints that carry their plan (llmshearing/checkpoint_plan.py); it
derives the plan of older ones, and gives tests the masked model a checkpoint was trained as.
"""
from __future__ import annotations

from llmshearing.convert.messages import one_line
from llmshearing.errors import CheckpointError, LLMShearingError
from llmshearing.model.config import LlamaConfig
from llmshearing.plan import PruningPlan
from llmshearing.shape import TargetShape
from llmshearing.sheared.l0_module import L0Module

BLOCK_GATE_PREFIXES = ("gates.head_layer.", "gates.mlp.")


def rebuild_l0_module(model_config: LlamaConfig, l0_state: dict) -> L0Module:
    """The L0Module whose state is ``l0_state`` (keys without the ``l0.`` prefix), in eval mode.

    Its extra state names the target shape; it must have been learned for ``model_config`` (the
    module's own check raises CheckpointError otherwise). Block gates exist iff their keys do.
    """
    extra = l0_state.get("_extra_state")
    if not isinstance(extra, dict) or "target_shape" not in extra:
        raise CheckpointError("the checkpoint's L0 state has no target shape (l0._extra_state)")
    block_masks = any(key.startswith(BLOCK_GATE_PREFIXES) for key in l0_state)
    try:
        l0 = L0Module(model_config, TargetShape.from_mapping(extra["target_shape"]), block_masks=block_masks)
        l0.load_state_dict(l0_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's L0 state does not fit its target shape: {one_line(exc)}") from exc
    except LLMShearingError as exc:
        raise CheckpointError(f"the checkpoint's L0 state cannot be used: {exc}") from exc
    return l0.eval()


def derived_plan(model_config: LlamaConfig, l0_state: dict) -> PruningPlan:
    """The plan the masks in ``l0_state`` give: the plan of a checkpoint that does not carry one."""
    return rebuild_l0_module(model_config, l0_state).make_plan()
