"""Conversion between Hugging Face / GGUF models, Composer checkpoints and HF exports."""
from llmshearing.lazy_exports import lazy_exports

__all__ = [
    "detect_format",
    "export_hf",
    "load_composer_model",
    "load_model",
    "read_composer_checkpoint",
    "save_composer_checkpoint",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "load_composer_model": "composer_checkpoint",
    "read_composer_checkpoint": "composer_checkpoint",
    "save_composer_checkpoint": "composer_checkpoint",
    "export_hf": "export",
    "detect_format": "sources",
    "load_model": "sources",
})
