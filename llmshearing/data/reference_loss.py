"""Reference losses for dynamic batch loading: compute them from a model, or read them from JSON.

    python -m llmshearing.data.reference_loss --model SRC --data DIR --out refs.json

scores SRC (an HF dir, a .gguf file, a Composer checkpoint, or "smollm2") on each domain's eval
split and writes ``{"reference_losses": {domain: mean next-token loss}, ...}``. When no scaling
law exists for a model family (the paper extrapolates LLaMA2 7B/13B/70B), the source model's own
per-domain loss is the practical target for the pruned model. Point a yaml at the file with
``dynamic_loading.reference_losses_file``. Progress goes to stdout, its last line is the output
path; bad input gives one ``error: ...`` line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from llmshearing.devices import add_device_argument
from llmshearing.errors import ConfigError, LLMShearingError

EXIT_BAD_INPUT = 2
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def read_reference_losses(path: str | Path) -> Dict[str, float]:
    """``{domain: loss}`` from a file written by this module (or a plain JSON mapping)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"reference-loss file not found: {path}") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"reference-loss file is not readable JSON: {path} ({error})") from error
    losses = payload.get("reference_losses", payload) if isinstance(payload, dict) else None
    if not isinstance(losses, dict) or not losses:
        raise ConfigError(f"reference-loss file {path} holds no {{domain: loss}} mapping")
    try:
        values = {str(domain): float(value) for domain, value in losses.items()}
    except (TypeError, ValueError) as error:
        raise ConfigError(f"reference-loss file {path} has a non-numeric loss ({error})") from error
    if not all(math.isfinite(value) for value in values.values()):
        raise ConfigError(f"reference-loss file {path} has a non-finite loss: {values}")
    return values


def compute_reference_losses(model_path: str, data_dir: str, domains: Optional[Sequence[str]] = None,
                             batches: int = 8, batch_size: int = 8, seq_len: Optional[int] = None,
                             device: str = "cpu", dtype: torch.dtype = torch.float32) -> Dict[str, float]:
    from llmshearing.convert.sources import load_model
    from llmshearing.data.corpus import load_manifest
    from llmshearing.data.domain_loss import domain_loss_sums
    from llmshearing.data.loaders import build_eval_dataloaders
    from llmshearing.training import resolve_model_path

    manifest = load_manifest(data_dir)
    domains = list(domains or manifest["domains"])
    loaders = build_eval_dataloaders(data_dir, domains, batch_size=batch_size,
                                     seq_len=seq_len or int(manifest["seq_len"]), max_batches=batches)
    model = load_model(resolve_model_path(model_path), dtype=dtype).to(device).eval()

    def to_device(batch):
        return {key: value.to(device) for key, value in batch.items()}

    sums, counts = domain_loss_sums(model, list(loaders.values()), to_device)
    return {domain: float(total / count) for domain, total, count in zip(domains, sums, counts)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="HF dir, .gguf, Composer checkpoint or 'smollm2'")
    parser.add_argument("--data", required=True, help="corpus dir with <domain>/eval MDS splits")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--domains", nargs="+", help="default: every domain of the corpus")
    parser.add_argument("--batches", type=int, default=8, help="eval batches per domain (default 8)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, help="default: the corpus's sample length")
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = parser.parse_args(argv)
    try:
        losses = compute_reference_losses(args.model, args.data, args.domains, args.batches,
                                          args.batch_size, args.seq_len, args.device, DTYPES[args.dtype])
    except (LLMShearingError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for domain, loss in losses.items():
        print(f"{domain}: {loss:.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"reference_losses": losses, "model": args.model, "data": args.data,
              "batches": args.batches, "batch_size": args.batch_size, "seq_len": args.seq_len}
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
