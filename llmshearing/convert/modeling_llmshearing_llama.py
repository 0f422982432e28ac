"""LLaMA with per-layer sizes for `transformers` (copied next to exports that need it).

Self-contained on purpose: the export writes this file into the model directory and names it in
config.json's ``auto_map``, so that

    AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)

loads a pruned model whose layers keep different numbers of MLP neurons / attention heads, without
llmshearing installed. The config is a plain ``LlamaConfig`` (``model_type: llama``) with the lists
``intermediate_sizes``, ``num_attention_heads_per_layer`` and ``num_key_value_heads_per_layer``
(one entry per layer; a missing list means the scalar field holds for every layer). Each decoder
layer is built by transformers' own ``LlamaDecoderLayer`` from a copy of the config holding that
layer's sizes; ``LlamaAttention`` and ``LlamaMLP`` take their widths from the config they are built
with, and ``head_dim`` is the same in every layer.
"""
import copy

from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaModel

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


class LlamaModelWithLayerSizes(LlamaModel):
    # The parent builds a layer stack of the scalar (largest) sizes first, replaced right away; under
    # from_pretrained that happens on the meta device and costs no memory.
    def __init__(self, config):
        super().__init__(config)
        layers = []
        for index in range(config.num_hidden_layers):
            layer = LlamaDecoderLayer(layer_config(config, index), index)
            # sizes are fixed at construction; later settings (attention implementation) follow the model's config
            layer.self_attn.config = config
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.post_init()


class LlamaForCausalLMWithLayerSizes(LlamaForCausalLM):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModelWithLayerSizes(config)
        self.post_init()


# save_pretrained of a loaded model copies this file along, so its output loads the same way
LlamaForCausalLMWithLayerSizes.register_for_auto_class("AutoModelForCausalLM")
