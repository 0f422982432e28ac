"""Sheared LLaMA: hard-concrete L0 masks that learn which units to keep for a target shape."""
from llmshearing.sheared.hard_concrete import HardConcrete
from llmshearing.sheared.l0_module import L0Module

__all__ = ["HardConcrete", "L0Module"]
