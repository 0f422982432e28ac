"""Sheared LLaMA: hard-concrete L0 masks that learn which units to keep for a target shape."""
from llmshearing.lazy_exports import lazy_exports

__all__ = ["HardConcrete", "L0Module"]
__getattr__, __dir__ = lazy_exports(__name__, {"HardConcrete": "hard_concrete", "L0Module": "l0_module"})
