"""Prune an HF LLaMA dir with a peer library, on calibration tokens from a file (issue 20's comparison).

Runs in the peers' own environment (llm-compressor and Torch-Pruning pin other torch/transformers
versions than this project), so it imports nothing from llmshearing:

    /work/peers_venv/bin/python benchmarks/peers/prune_peer.py --model DENSE_HF --calib calib.pt \
        --out DST --method sparsegpt --mask 0:0 --sparsity 0.5        # llm-compressor SparseGPT, unstructured
    ... --method wanda --mask 2:4 --sparsity 0.5                         # llm-compressor Wanda, 2:4
    ... --method taylor --target-params 105000000                        # Torch-Pruning Taylor (MLP neurons)

--calib: a torch file holding an int64 tensor [samples, seq_len] of token ids. SparseGPT/Wanda prune
every Linear of the decoder layers (not lm_head, which is tied to the embeddings). Taylor removes MLP
neurons, the same number in every layer (the config stays a plain LLaMA), as many as it takes to
come down to --target-params parameters; query/KV heads are kept (Torch-Pruning's head pruning of
grouped-query attention is not used). DST gets a plain HF model dir (dense weights, zeros in
place of pruned ones; no compressed-tensors format) and the tokenizer files of --model. The last
stdout line is a JSON object: method, seconds (pruning alone: no load or save), peak RSS, versions.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja")


def load(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def prune_llmcompressor(model, model_dir, tokens: torch.Tensor, method: str, sparsity: float, mask: str,
                        batch_size: int):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    modifier_class = {"sparsegpt": SparseGPTModifier, "wanda": WandaPruningModifier}[method]
    modifier = modifier_class(sparsity=sparsity, mask_structure=mask, targets=["Linear"], ignore=["lm_head"])
    dataset = Dataset.from_dict({"input_ids": tokens.tolist(), "attention_mask": torch.ones_like(tokens).tolist()})
    oneshot(model=model, processor=AutoTokenizer.from_pretrained(model_dir), dataset=dataset, recipe=[modifier], num_calibration_samples=len(tokens),
            max_seq_length=tokens.shape[1], batch_size=batch_size, shuffle_calibration_samples=False)
    return model


def mlp_neurons_to_remove(config, parameters: int, target_parameters: int) -> int:
    """Neurons to remove from every layer's MLP (gate, up and down: 3 × hidden each) to reach the target."""
    per_neuron = 3 * config.hidden_size * config.num_hidden_layers
    return max(0, min(config.intermediate_size - 1, round((parameters - target_parameters) / per_neuron)))


def prune_taylor(model, tokens: torch.Tensor, target_parameters: int, batch_size: int):
    import torch_pruning as tp

    config = model.config
    remove = mlp_neurons_to_remove(config, model.num_parameters(), target_parameters)
    keep = config.intermediate_size - remove
    # Taylor importance |w · ∂L/∂w| summed over each group: gradients of the LM loss on the calibration set
    model.zero_grad()
    for batch in tokens.split(batch_size):
        loss = model(input_ids=batch, labels=batch).loss * len(batch) / len(tokens)
        loss.backward()
    model.config.use_cache = False
    roots = [m for layer in model.model.layers for m in (layer.mlp.gate_proj, layer.mlp.up_proj)]
    ignored = [module for module in model.modules() if isinstance(module, torch.nn.Linear) and module not in roots]
    ignored += [model.model.embed_tokens]
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=tokens[:1, :16],
        importance=tp.importance.GroupTaylorImportance(),
        pruning_ratio=remove / config.intermediate_size, global_pruning=False,
        ignored_layers=ignored, round_to=1, output_transform=lambda output: output.logits,
    )
    pruner.step()
    model.zero_grad(set_to_none=True)
    sizes = {layer.mlp.gate_proj.out_features for layer in model.model.layers}
    if sizes != {keep} or any(layer.mlp.down_proj.in_features != keep or layer.mlp.up_proj.out_features != keep
                              for layer in model.model.layers):
        raise RuntimeError(f"Torch-Pruning left MLP sizes {sorted(sizes)}, expected {keep} in every layer")
    heads = {layer.self_attn.q_proj.out_features for layer in model.model.layers}
    if heads != {config.num_attention_heads * config.head_dim}:
        raise RuntimeError(f"Torch-Pruning changed the attention projections: {sorted(heads)}")
    config.intermediate_size = keep
    return model


def save_plain(model, source_dir: Path, out: Path) -> None:
    """A fresh (unpatched) model of the pruned config gets the weights: no compression, plain config.json."""
    from transformers import AutoModelForCausalLM

    config = model.config
    for key in ("quantization_config", "sparsity_config"):
        if hasattr(config, key):
            delattr(config, key)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if out.exists():
        shutil.rmtree(out)
    fresh.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (source_dir / name).exists():
            shutil.copy(source_dir / name, out / name)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("llmcompressor", "compressed-tensors", "torch-pruning", "torch", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="dense HF model dir")
    parser.add_argument("--calib", required=True, help="torch file: int64 tensor [samples, seq_len]")
    parser.add_argument("--out", required=True)
    parser.add_argument("--method", choices=("sparsegpt", "wanda", "taylor"), required=True)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--mask", default="0:0", help='llm-compressor mask_structure: "0:0" (unstructured) or "2:4"')
    parser.add_argument("--target-params", type=int, default=None, help="taylor: parameter count to reach")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    if args.method == "taylor" and args.target_params is None:
        parser.error("--method taylor needs --target-params")
    tokens = torch.load(args.calib).long()
    model = load(args.model)
    dense_parameters = model.num_parameters()
    started = time.perf_counter()
    if args.method == "taylor":
        model = prune_taylor(model, tokens, args.target_params, args.batch_size)
    else:
        model = prune_llmcompressor(model, args.model, tokens, args.method, args.sparsity, args.mask, args.batch_size)
    seconds = time.perf_counter() - started
    save_plain(model, Path(args.model), Path(args.out))
    print(json.dumps({"method": args.method, "mask": args.mask, "sparsity": args.sparsity, "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "dense_parameters": dense_parameters, "parameters": model.num_parameters(),
                      "threads": torch.get_num_threads(), "versions": versions()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
