"""The pruning plan a Composer checkpoint carries: what ``llmshearing export --prune`` slices with.

Sheared's L0 module keeps the plan its masks give at that moment in its own ``_extra_state``
(``l0._extra_state["pruning_plan"]``, the JSON of ``PruningPlan.to_dict()``), so every checkpoint
carries the plan of its own step, written by the same ``state_dict()`` call as the weights it
slices. It lives there rather than in a ``pruning_plan.json`` beside the checkpoint because a run
writes many checkpoints, each a single ``.pt`` file that Composer may upload to an object store,
rotate or re-link as ``latest``: one file beside them could describe one of them at most, and could
be separated from it, while the state goes wherever the checkpoint goes. (The run's final plan is
still written as ``pruning_plan.json`` into the save_folder, for people and for distillation.)

Checkpoints written before the L0 module stored its plan hold only the masks; their plan is
derived from the L0 state here, and only here.
"""
from __future__ import annotations

from llmshearing.errors import CheckpointError
from llmshearing.model.config import LlamaConfig
from llmshearing.plan import PLAN_STATE_KEY, PruningPlan

EXTRA_STATE = "_extra_state"


def checkpoint_plan(model_config: LlamaConfig, l0_state: dict) -> PruningPlan:
    """The plan stored in a checkpoint's L0 state (its ``l0.*`` entries with the prefix removed); for
    a checkpoint written before plans were stored, the plan its masks give."""
    extra = l0_state.get(EXTRA_STATE)
    stored = extra.get(PLAN_STATE_KEY) if isinstance(extra, dict) else None
    if stored is None:
        from llmshearing.sheared.l0_state import derived_plan

        return derived_plan(model_config, l0_state)
    try:
        return PruningPlan.from_dict(stored)
    except (TypeError, KeyError, AttributeError) as exc:
        raise CheckpointError(f"the checkpoint's pruning plan (l0.{EXTRA_STATE}.{PLAN_STATE_KEY}) cannot be "
                              f"read: {exc}") from exc
