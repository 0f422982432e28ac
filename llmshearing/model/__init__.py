from llmshearing.model.config import LlamaConfig
from llmshearing.model.llama import LlamaForCausalLM, MASK_NAMES

__all__ = ["LlamaConfig", "LlamaForCausalLM", "MASK_NAMES"]
