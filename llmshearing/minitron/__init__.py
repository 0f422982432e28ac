"""Minitron: activation-based importance, top-k pruning to a target shape, architecture search.

Distillation (the recovery training) is the Composer algorithm in llmshearing/composer/distillation.py.
"""
from llmshearing.minitron.importance import Importance
from llmshearing.minitron.scoring import estimate_importance
from llmshearing.minitron.selection import build_plan

__all__ = ["Importance", "build_plan", "estimate_importance"]
