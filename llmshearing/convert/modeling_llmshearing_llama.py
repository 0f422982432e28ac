"""Models with per-layer sizes for `transformers` (copied next to exports that need it).

Self-contained on purpose: the export writes this file into the model directory and names it in
config.json's ``auto_map``, so that

    AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)

loads a pruned model whose layers keep different numbers of MLP neurons / attention heads, without
llmshearing installed. The config is the family's own (``LlamaConfig``, ``Qwen3Config`` ...) with the
lists ``intermediate_sizes``, ``num_attention_heads_per_layer`` and ``num_key_value_heads_per_layer``
(one entry per layer; a missing list means the scalar field holds for every layer). Each decoder
layer is built by transformers' own decoder layer class of the family from a copy of the config
holding that layer's sizes; attention and MLP take their widths from the config they are built
with, and ``head_dim`` is the same in every layer.
"""
import copy

from torch import nn
from transformers.models.gemma3 import modeling_gemma3
from transformers.models.llama import modeling_llama
from transformers.models.mistral import modeling_mistral
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen3 import modeling_qwen3

PER_LAYER_FIELDS = {
    "intermediate_sizes": "intermediate_size",
    "num_attention_heads_per_layer": "num_attention_heads",
    "num_key_value_heads_per_layer": "num_key_value_heads",
}


def layer_config(config, index: int):
    """A copy of ``config`` with layer ``index``'s sizes in the scalar fields."""
    layer = copy.copy(config)
    for per_layer, scalar in PER_LAYER_FIELDS.items():
        sizes = getattr(config, per_layer, None)
        if sizes is not None:
            setattr(layer, scalar, sizes[index])
    return layer


def _with_layer_sizes(family: str, module, model_class: str = ""):
    """Subclasses of the family's model and causal-LM classes that build each layer with its own sizes."""
    base_model = getattr(module, model_class or f"{family}Model")
    base_lm = getattr(module, f"{family}ForCausalLM")
    decoder_layer = getattr(module, f"{family}DecoderLayer")

    class ModelWithLayerSizes(base_model):
        # The parent builds a layer stack of the scalar (largest) sizes first, replaced right away; under
        # from_pretrained that happens on the meta device and costs no memory.
        def __init__(self, config):
            super().__init__(config)
            layers = []
            for index in range(config.num_hidden_layers):
                layer = decoder_layer(layer_config(config, index), index)
                # sizes are fixed at construction; later settings (attention implementation) follow the model's config
                layer.self_attn.config = config
                layers.append(layer)
            self.layers = nn.ModuleList(layers)
            self.post_init()

    class ForCausalLMWithLayerSizes(base_lm):
        def __init__(self, config):
            super().__init__(config)
            self.model = ModelWithLayerSizes(config)
            self.post_init()

    ModelWithLayerSizes.__name__ = ModelWithLayerSizes.__qualname__ = f"{family}ModelWithLayerSizes"
    ForCausalLMWithLayerSizes.__name__ = ForCausalLMWithLayerSizes.__qualname__ = f"{family}ForCausalLMWithLayerSizes"
    # save_pretrained of a loaded model copies this file along, so its output loads the same way
    ForCausalLMWithLayerSizes.register_for_auto_class("AutoModelForCausalLM")
    return ModelWithLayerSizes, ForCausalLMWithLayerSizes


LlamaModelWithLayerSizes, LlamaForCausalLMWithLayerSizes = _with_layer_sizes("Llama", modeling_llama)
MistralModelWithLayerSizes, MistralForCausalLMWithLayerSizes = _with_layer_sizes("Mistral", modeling_mistral)
Qwen2ModelWithLayerSizes, Qwen2ForCausalLMWithLayerSizes = _with_layer_sizes("Qwen2", modeling_qwen2)
Qwen3ModelWithLayerSizes, Qwen3ForCausalLMWithLayerSizes = _with_layer_sizes("Qwen3", modeling_qwen3)
Gemma3ModelWithLayerSizes, Gemma3ForCausalLMWithLayerSizes = _with_layer_sizes("Gemma3", modeling_gemma3,
                                                                                "Gemma3TextModel")
