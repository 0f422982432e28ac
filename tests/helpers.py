"""Small builders shared by tests."""
from __future__ import annotations

import random

import torch

from llmshearing.model import LlamaConfig, LlamaForCausalLM
from llmshearing.plan import PruningPlan


def tiny_config(**overrides) -> LlamaConfig:
    values = dict(
        vocab_size=97, hidden_size=45, intermediate_size=37, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(**overrides)).eval()
    # larger than init-scale weights so that pruning mistakes show in the logits
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)
    return model


def random_plan(config: LlamaConfig, *, layers: int, kv_heads: int, heads: int, neurons: int, hidden: int,
                seed: int = 0, scales: bool = True) -> PruningPlan:
    rng = random.Random(seed)

    def scale(n):
        return [rng.uniform(0.3, 1.2) for _ in range(n)] if scales else None

    groups = config.query_groups
    per_group = heads // kv_heads
    plan = PruningPlan.identity(config, method="test")
    plan.kept_hidden = sorted(rng.sample(range(config.hidden_size), hidden))
    plan.hidden_scale = scale(hidden)
    plan.layers = [plan.layers[i] for i in sorted(rng.sample(range(config.num_hidden_layers), layers))]
    for layer in plan.layers:
        layer.kept_kv_heads = sorted(rng.sample(range(config.num_key_value_heads), kv_heads))
        layer.kept_heads = [h for kv in layer.kept_kv_heads
                            for h in rng.sample(range(kv * groups, (kv + 1) * groups), per_group)]
        layer.kept_neurons = sorted(rng.sample(range(config.intermediate_size), neurons))
        layer.head_scale, layer.neuron_scale = scale(heads), scale(neurons)
        layer.attn_scale, layer.mlp_scale = (rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)) if scales else (1.0, 1.0)
    return plan


def load_benchmark_script(name: str):
    """Import ``benchmarks/<name>.py`` (not a package) as a module."""
    import importlib.util
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
