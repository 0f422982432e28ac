"""Training-step time of the L0-masked model vs the same-shape unmasked model.

    python benchmarks/mask_overhead.py --shape smollm2 --seq-len 256 --batch 2          # CPU
    python benchmarks/mask_overhead.py --shape llama2-7b --layers 4 --device cuda --dtype bf16 --seq-len 4096

A step is forward + backward + AdamW step; the masked step also samples the hard-concrete masks and
adds the Lagrangian, exactly as a pruning run does. Prints one JSON line per run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time

import torch

from llmshearing.model import LlamaConfig
from llmshearing.model.composer_model import ComposerLlama
from llmshearing.shape import TargetShape
from llmshearing.sheared.l0_module import L0Module
from shapes import SHAPES  # benchmarks/ is the script's folder

TARGETS = {  # roughly the paper's ratios
    "tiny": dict(hidden_size=64, num_attention_heads=2, num_key_value_heads=2, intermediate_size=160),
    "smollm2": dict(hidden_size=384, num_attention_heads=6, num_key_value_heads=3, intermediate_size=1024),
    "llama2-7b": dict(hidden_size=2560, num_attention_heads=20, num_key_value_heads=20, intermediate_size=6912),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def time_steps(model: ComposerLlama, batch, steps: int, warmup: int, device) -> list:
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        outputs = model(batch)
        loss = model.loss(outputs, batch)
        if model.l0 is not None:
            loss = loss + model.l0.lagrangian(i)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(TARGETS), default="smollm2")
    parser.add_argument("--layers", type=int, default=None, help="override the number of layers")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    args = parser.parse_args()

    values = dict(SHAPES[args.shape])
    if args.layers:
        values["num_hidden_layers"] = args.layers
    config = LlamaConfig(**values)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    target = TargetShape.from_mapping(TARGETS[args.shape], config)
    batch = {"input_ids": torch.randint(0, config.vocab_size, (args.batch, args.seq_len), device=device)}

    results = {}
    for label in ("unmasked", "masked"):
        torch.manual_seed(0)
        model = ComposerLlama(dataclasses.replace(config)).to(device=device, dtype=dtype).train()
        if label == "masked":
            model.l0 = L0Module(config, target).to(device)
        times = time_steps(model, batch, args.steps, args.warmup, device)
        results[label] = statistics.median(times)
        del model
    overhead = results["masked"] / results["unmasked"] - 1
    print(json.dumps({
        "shape": args.shape, "layers": config.num_hidden_layers, "seq_len": args.seq_len, "batch": args.batch,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": args.dtype, "torch": torch.__version__, "unmasked_step_s": round(results["unmasked"], 4),
        "masked_step_s": round(results["masked"], 4), "overhead_pct": round(100 * overhead, 1),
    }))


if __name__ == "__main__":
    main()
