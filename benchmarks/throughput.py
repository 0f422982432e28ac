"""Training throughput (tokens/s/GPU) and model FLOPs utilisation (MFU) of pruning and CPT.

    python benchmarks/throughput.py                         # GPU: the paper's shapes, seq 4096, bf16, FSDP
    python benchmarks/throughput.py --tiny --device cpu     # CPU smoke run with tiny shapes (the tests)

Runs (``--runs``): ``prune:llama2-7b`` is the pruning stage (the LLaMA2-7B model with the L0
module attached: hard-concrete masks sampled every step and the Lagrangian added, target the 2.7B
shape); ``cpt:sheared-2.7b`` / ``cpt:sheared-1.3b`` are continued pre-training of the pruned shapes
(no masks). Every run is crossed with the attention kernels (``--attn``: ``sdpa-flash`` = PyTorch SDPA
restricted to its flash backend; ``flash-attn`` = the flash-attn package, skipped when it is not
installed) and activation checkpointing (``--checkpointing off on``). A step is forward + backward +
AdamW step of ``--batch`` sequences of ``--seq-len`` tokens on each GPU; the model is wrapped with
FSDP2 (``fully_shard`` per decoder layer, bf16 compute, fp32 reduce) on a process group of one
rank, as a one-GPU Composer FSDP run is.

MFU = achieved model FLOP/s ÷ the device's peak dense bf16 FLOP/s. Model FLOPs per token
(PaLM, Chowdhery et al. 2022, appendix B):

    6·N + 12·L·H·Q·S

N = parameters that enter a matrix product (every linear layer, lm_head included; the embedding
lookup is not a product), L layers, H query heads, Q head dim, S sequence length: 6·N for the weight
matmuls of forward + backward, 12·L·H·Q·S for the attention scores and the weighted values (full
S×S, causal masking not discounted). Recomputation under activation checkpointing is not counted
(that would be hardware FLOPs utilisation). The masks' element-wise products are not counted either.

Peak dense bf16 FLOP/s per device (vendor datasheets, without structured sparsity): PEAK_TFLOPS below,
matched on the CUDA device name; ``--peak-tflops`` for anything else (CPU runs report MFU null).
One JSON object a line, to stdout and to ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from llmshearing.devices import add_device_argument, chosen_device  # noqa: E402
from llmshearing.model import LlamaConfig  # noqa: E402
from llmshearing.model.composer_model import ComposerLlama  # noqa: E402
from llmshearing.model.llama import DecoderLayer  # noqa: E402
from shapes import SHAPES  # noqa: E402

PRUNING_TARGETS = {"llama2-7b": "sheared-2.7b", "tiny-source": "tiny-target"}
DEFAULT_RUNS = ["prune:llama2-7b", "cpt:sheared-2.7b", "cpt:sheared-1.3b"]
TINY_RUNS = ["prune:tiny-source", "cpt:tiny-target"]
# dense bf16 tensor-core peak, TFLOP/s; the first name fragment found in the device name wins
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("GH200", 989.4),
               ("B200", 2250.0), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0), ("A10", 125.0)]
ATTENTION = ("sdpa-flash", "flash-attn")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def matmul_parameters(config: LlamaConfig) -> int:
    """N: parameters used in matrix products (all but the input embedding; lm_head counted even if tied)."""
    d, q = config.hidden_size, config.head_dim
    attention = 2 * d * config.num_attention_heads * q + 2 * d * config.num_key_value_heads * q
    mlp = 3 * d * config.intermediate_size
    return config.num_hidden_layers * (attention + mlp) + config.vocab_size * d


def flops_per_token(config: LlamaConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·H·Q·S (see the module docstring)."""
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * seq_len
    return 6.0 * matmul_parameters(config) + attention


def peak_tflops(device: torch.device, override: Optional[float]) -> Optional[float]:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for fragment, value in PEAK_TFLOPS if fragment in name), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")


def flash_attn_installed() -> bool:
    from llmshearing.model import llama

    return llama.flash_attn_func is not None


@dataclasses.dataclass
class Run:
    mode: str  # prune | cpt
    shape: str
    attn: str
    checkpointing: bool

    def label(self) -> str:
        return f"{self.mode}:{self.shape} {self.attn} ckpt={'on' if self.checkpointing else 'off'}"


def init_single_rank(device: torch.device) -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29400 + os.getpid() % 1000))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)


def shard(model: ComposerLlama, dtype: torch.dtype) -> None:
    """FSDP2 per decoder layer and around the whole model; bf16 compute, fp32 gradient reduction."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for module in model.model.modules():
        if isinstance(module, DecoderLayer):
            fully_shard(module, mp_policy=policy)
    fully_shard(model.model, mp_policy=policy)


def build_model(run: Run, config: LlamaConfig, args, device: torch.device) -> ComposerLlama:
    with torch.device(device):
        model = ComposerLlama(config)
    model.model.model.gradient_checkpointing = run.checkpointing
    if run.mode == "prune":
        from llmshearing.shape import TargetShape
        from llmshearing.sheared.l0_module import L0Module

        target = {k: v for k, v in SHAPES[PRUNING_TARGETS[run.shape]].items() if k in TargetShape.__annotations__}
        model.l0 = L0Module(config, TargetShape.from_mapping(target, config)).to(device)
    if args.fsdp:
        shard(model, DTYPES[args.dtype])
    else:
        model.model.to(DTYPES[args.dtype])
    return model.train()


def attention_context(attn: str, device: torch.device):
    if attn != "sdpa-flash":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.FLASH_ATTENTION)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(model: ComposerLlama, run: Run, args, device: torch.device) -> List[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=device.type == "cuda")
    batch = {"input_ids": torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), device=device)}
    times = []
    with attention_context(run.attn, device):
        for step in range(args.warmup + args.steps):
            synchronize(device)
            start = time.perf_counter()
            loss = model.loss(model(batch), batch)
            if model.l0 is not None:
                loss = loss + model.l0.lagrangian(step)[0]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(device)
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
    return times


def measure(run: Run, args, device: torch.device) -> Dict:
    config = LlamaConfig(**{**SHAPES[run.shape], **({"num_hidden_layers": args.layers} if args.layers else {})},
                         attn_impl="flash_attn" if run.attn == "flash-attn" else "sdpa")
    record = {"run": run.label(), "mode": run.mode, "shape": run.shape, "layers": config.num_hidden_layers,
              "attn": run.attn, "activation_checkpointing": run.checkpointing, "seq_len": args.seq_len,
              "batch_per_gpu": args.batch, "dtype": args.dtype, "fsdp": args.fsdp, "device": device_name(device),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d", time.gmtime())}
    if run.attn == "flash-attn" and not (flash_attn_installed() and device.type == "cuda"):
        return {**record, "skipped": "flash-attn is not installed (or no CUDA device)"}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        model = build_model(run, config, args, device)
        seconds = statistics.median(step_times(model, run, args, device))
    except torch.cuda.OutOfMemoryError as error:
        return {**record, "skipped": f"out of memory: {str(error).splitlines()[0][:120]}"}
    finally:
        model = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    tokens_per_s = args.batch * args.seq_len / seconds  # one rank: per GPU
    achieved = tokens_per_s * flops_per_token(config, args.seq_len)
    peak = peak_tflops(device, args.peak_tflops)
    return {**record, "step_s": round(seconds, 4), "tokens_per_s_per_gpu": round(tokens_per_s, 1),
            "model_tflops_per_s": float(f"{achieved / 1e12:.4g}"), "peak_tflops": peak,
            "mfu": None if peak is None else float(f"{achieved / (peak * 1e12):.4g}"),
            "matmul_params": matmul_parameters(config),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None}


def planned_runs(args) -> Iterator[Run]:
    for spec in args.runs or (TINY_RUNS if args.tiny else DEFAULT_RUNS):
        mode, _, shape = spec.partition(":")
        if mode not in ("prune", "cpt") or shape not in SHAPES or (mode == "prune" and shape not in PRUNING_TARGETS):
            raise SystemExit(f"error: bad run {spec!r}: prune:{'|'.join(PRUNING_TARGETS)} or cpt:{'|'.join(SHAPES)}")
        for attn in args.attn:
            for checkpointing in args.checkpointing:
                yield Run(mode, shape, attn, checkpointing == "on")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", help=f"default: {' '.join(DEFAULT_RUNS)} ({' '.join(TINY_RUNS)} with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (CPU smoke run)")
    parser.add_argument("--attn", nargs="+", choices=ATTENTION, default=list(ATTENTION))
    parser.add_argument("--checkpointing", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1, help="sequences per GPU and step")
    parser.add_argument("--layers", type=int, help="override the number of layers (a shape too big for the device)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--no-fsdp", dest="fsdp", action="store_false", help="plain model in --dtype instead of FSDP2")
    add_device_argument(parser)
    parser.add_argument("--peak-tflops", type=float, help="peak dense FLOP/s of the device, in TFLOP/s")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(chosen_device(args.device))
    if args.fsdp:
        init_single_rank(device)
    torch.manual_seed(0)
    for run in planned_runs(args):
        line = json.dumps(measure(run, args, device))
        print(line, flush=True)
        if args.out:
            with args.out.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
    if args.fsdp:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
