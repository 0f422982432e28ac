"""Conversion between Hugging Face / GGUF models, Composer checkpoints and HF exports."""
from llmshearing.convert.composer_checkpoint import (
    load_composer_model,
    read_composer_checkpoint,
    save_composer_checkpoint,
)
from llmshearing.convert.export import export_hf
from llmshearing.convert.sources import detect_format, load_model

__all__ = [
    "detect_format",
    "export_hf",
    "load_composer_model",
    "load_model",
    "read_composer_checkpoint",
    "save_composer_checkpoint",
]
