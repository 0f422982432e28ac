"""Composer algorithms and callbacks: each does one job."""
from llmshearing.composer.l0_pruning import L0Pruning
from llmshearing.composer.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from llmshearing.composer.mask_plot import MaskSizePlot

__all__ = ["L0Pruning", "MaskSizePlot", "NonFiniteLossError", "StopOnNonFiniteLoss"]
