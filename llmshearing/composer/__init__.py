"""Composer plumbing every method's runs share: checkpoint writes, distillation, DDP/FSDP helpers, the NaN
guard, the run's own files. Each method's own algorithm lives with the method (llmshearing/sheared/l0_pruning.py,
llmshearing/dynamic_loading/callback.py)."""
from llmshearing.composer.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss

__all__ = ["NonFiniteLossError", "StopOnNonFiniteLoss"]
