"""Minitron: activation-based importance, top-k pruning to a target shape, architecture search.

Distillation (the recovery training) is the Composer algorithm in llmshearing/composer/distillation.py.
"""
from llmshearing.lazy_exports import lazy_exports

__all__ = ["Importance", "build_plan", "estimate_importance"]
__getattr__, __dir__ = lazy_exports(__name__, {"Importance": "importance", "build_plan": "selection",
                                               "estimate_importance": "scoring"})
