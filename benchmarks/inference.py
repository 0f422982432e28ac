"""Inference speed of source and pruned models as a user runs them: plain `transformers`, greedy
`generate` with the KV cache.

    python benchmarks/inference.py smollm2 DIR_PRUNED DIR_2_4 --device cpu                  # exported models
    python benchmarks/inference.py shape:llama2-7b shape:sheared-2.7b shape:llama2-7b:2:4 \
        --device cuda --dtype bf16 --semi-structured                                       # shapes, random weights

A model is ``[LABEL=]SPEC``: an HF directory (what every pruning method exports; per-layer sizes load
with ``trust_remote_code``), a ``.gguf`` file, ``smollm2``, or ``shape:NAME`` — a named architecture
of ``benchmarks/shapes.py`` with random weights (speed does not depend on the values), and
``shape:NAME:2:4`` the same with every projection made 2:4 sparse. ``--semi-structured`` (CUDA,
fp16/bf16) turns every model whose projections are all 2:4 into PyTorch semi-structured sparse
tensors, so "2:4 is faster" is measured rather than assumed; without it 2:4 and unstructured models
are dense matrices with zeros and run exactly as fast as the source.

Per model, the median of ``--repeats`` timed runs after one warm-up:
- prefill: one forward pass over ``--batch`` prompts of ``--prompt-len`` tokens, filling the KV
  cache and computing the last position's logits (what ``generate`` does first): tokens/s.
- decode: ``generate`` of ``--new-tokens`` tokens (always that many: ``min_new_tokens``); the time
  after the prefill divided by the tokens decoded after the first: ms per step and tokens/s.
- memory: CUDA peak allocated during generation, or the weights' bytes on the CPU.
Speed-ups are relative to the first model measured. One JSON object per model to stdout and
``--out``; ``--markdown`` writes the table for docs/BENCHMARKS.md. A model that fails (out of memory,
a sparse kernel refusing a shape, unreadable files) is reported with its error; the others are
still measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, List, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from llmshearing.devices import add_device_argument, chosen_device  # noqa: E402
from shapes import SHAPES  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SHAPE_PREFIX, TWO_FOUR_SUFFIX = "shape:", ":2:4"


@dataclass
class ModelSpec:
    label: str
    spec: str

    @classmethod
    def parse(cls, text: str) -> "ModelSpec":
        label, sep, spec = text.partition("=")
        if not sep:
            spec = text
            label = Path(text).name if not text.startswith(SHAPE_PREFIX) else text[len(SHAPE_PREFIX):]
        return cls(label, spec)

    @property
    def shape_name(self) -> Optional[str]:
        if not self.spec.startswith(SHAPE_PREFIX):
            return None
        return self.spec[len(SHAPE_PREFIX):].removesuffix(TWO_FOUR_SUFFIX)


@dataclass
class Row:
    model: str
    source: str
    parameters: int
    device: str
    dtype: str
    batch: int
    prompt_len: int
    new_tokens: int
    semi_structured: bool
    prefill_tokens_per_s: float
    decode_ms_per_step: float
    decode_tokens_per_s: float
    memory_gb: float
    prefill_speedup: float = 1.0
    decode_speedup: float = 1.0


def load_model(spec: ModelSpec, dtype: torch.dtype, device: torch.device):
    """A `transformers` causal LM for ``spec``, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM

    name = spec.shape_name
    if name is not None:
        if name not in SHAPES:
            raise SystemExit(f"error: unknown shape {name!r} in {spec.spec!r}; known: {', '.join(sorted(SHAPES))}")
        from llmshearing.model import LlamaConfig

        with torch.device(device):
            model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[name]).to_hf(), dtype=dtype)
        if spec.spec.endswith(TWO_FOUR_SUFFIX):
            make_two_four(model)
        return model.eval()
    path = Path(spec.spec)
    if spec.spec == "smollm2":
        from llmshearing.assets import smollm2_gguf_path

        path = smollm2_gguf_path()
    if not path.exists():
        raise SystemExit(f"error: no model at {path} (an HF dir, a .gguf file, smollm2 or shape:NAME)")
    if path.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=True)
    return model.to(device).eval()


@torch.no_grad()
def make_two_four(model) -> None:
    """Zero the two smallest-magnitude weights of every four consecutive inputs of every projection."""
    from llmshearing.surgeon.kfac import PROJECTIONS

    for layer in model.model.layers:
        for name in PROJECTIONS:
            weight = layer.get_submodule(name).weight
            groups = weight.view(-1, 4)
            smallest = groups.abs().topk(2, dim=1, largest=False).indices
            groups.scatter_(1, smallest, 0.0)


def is_two_four(model) -> bool:
    from llmshearing.surgeon.kfac import PROJECTIONS
    from llmshearing.surgeon.semi_structured import two_zeros_in_every_four

    return all(two_zeros_in_every_four(layer.get_submodule(name).weight)
               for layer in model.model.layers for name in PROJECTIONS)


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    def timed() -> float:
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - start

    timed()  # warm-up: kernels, allocator, caches
    return statistics.median(timed() for _ in range(repeats))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spec: ModelSpec, args: argparse.Namespace) -> Row:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    model = load_model(spec, dtype, device)
    parameters = sum(p.numel() for p in model.parameters())  # before 2:4 compression changes the count
    semi = False
    if args.semi_structured and is_two_four(model):
        from llmshearing.surgeon.semi_structured import to_semi_structured

        to_semi_structured(model)
        semi = True
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (args.batch, args.prompt_len),
                           generator=torch.Generator().manual_seed(args.seed)).to(device)
    attention_mask = torch.ones_like(prompt)

    def prefill():
        return model(input_ids=prompt, attention_mask=attention_mask, use_cache=True, logits_to_keep=1)

    def generate():
        out = model.generate(input_ids=prompt, attention_mask=attention_mask, max_new_tokens=args.new_tokens,
                             min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
        if out.shape[1] != args.prompt_len + args.new_tokens:
            raise RuntimeError(f"{spec.label}: generate returned {out.shape[1] - args.prompt_len} new tokens, "
                               f"not {args.new_tokens}")

    with torch.inference_mode():
        prefill_s = median_seconds(prefill, args.repeats, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        generate_s = median_seconds(generate, args.repeats, device)
    decode_steps = max(1, args.new_tokens - 1)  # the first new token comes out of the prefill
    decode_s = max(generate_s - prefill_s, 1e-9) / decode_steps
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device)
    else:
        tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}  # a tied embedding once
        memory = sum(t.numel() * t.element_size() for t in tensors.values())
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return Row(model=spec.label, source=spec.spec, parameters=parameters, device=device_name(device),
               dtype=args.dtype, batch=args.batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
               semi_structured=semi, prefill_tokens_per_s=args.batch * args.prompt_len / prefill_s,
               decode_ms_per_step=1000 * decode_s, decode_tokens_per_s=args.batch / decode_s,
               memory_gb=memory / 1e9)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def add_speedups(rows: List[Row]) -> None:
    base = rows[0]
    for row in rows:
        row.prefill_speedup = row.prefill_tokens_per_s / base.prefill_tokens_per_s
        row.decode_speedup = row.decode_tokens_per_s / base.decode_tokens_per_s


def markdown(rows: List[Row]) -> str:
    lines = ["| model | params | prefill tok/s | decode ms/step | decode tok/s | memory GB | prefill × | decode × |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        name = r.model + (" (semi-structured 2:4)" if r.semi_structured else "")
        lines.append(f"| {name} | {r.parameters / 1e6:.1f}M | {r.prefill_tokens_per_s:,.0f} | "
                     f"{r.decode_ms_per_step:.2f} | {r.decode_tokens_per_s:,.1f} | {r.memory_gb:.2f} | "
                     f"{r.prefill_speedup:.2f} | {r.decode_speedup:.2f} |")
    first = rows[0]
    lines.append(f"\n{first.device}, torch {torch.__version__}, {first.dtype}, batch {first.batch}, "
                 f"prompt {first.prompt_len} tokens, {first.new_tokens} new tokens; "
                 f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="[LABEL=]SPEC: HF dir, .gguf, smollm2, shape:NAME[:2:4]")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--semi-structured", action="store_true",
                        help="CUDA, fp16/bf16: 2:4 models as semi-structured sparse tensors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    parser.add_argument("--markdown", type=Path, help="write the table to this file")
    args = parser.parse_args(argv)
    args.device = chosen_device(args.device)
    if args.new_tokens < 2 or args.prompt_len < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("--new-tokens must be >= 2 and --prompt-len, --batch, --repeats >= 1")
    if args.semi_structured and (not args.device.startswith("cuda") or args.dtype == "fp32"):
        parser.error("--semi-structured needs --device cuda and --dtype bf16 or fp16")
    return args


def main(argv=None) -> List[Row]:
    args = parse_args(argv)
    rows, failures = [], {}
    for text in args.models:
        spec = ModelSpec.parse(text)
        print(f"measuring {spec.label} ({spec.spec}) ...", file=sys.stderr, flush=True)
        try:
            rows.append(measure(spec, args))
        except (RuntimeError, ValueError, NotImplementedError, OSError) as exc:  # OOM, a kernel refusing a shape, bad files
            failures[spec.label] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"{spec.label} failed: {failures[spec.label]}", file=sys.stderr, flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    if rows:
        add_speedups(rows)
    records = [asdict(row) for row in rows] + [{"model": label, "error": error} for label, error in failures.items()]
    for record in records:
        line = json.dumps(record)
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")
    if not rows:
        raise SystemExit(f"error: no model could be measured ({'; '.join(failures.values())})")
    table = markdown(rows) + "".join(f"\n{label}: failed ({error})" for label, error in failures.items())
    print(table, file=sys.stderr)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return rows


if __name__ == "__main__":
    main()
