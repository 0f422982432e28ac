"""Reference losses for dynamic batch loading: compute them from a model, or read them from JSON.

    llmshearing reference-loss --model SRC --data DIR --out refs.json
    python -m llmshearing.data.reference_loss ...     # the same, older spelling

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

from llmshearing.cli.command import command_parser, run_cli
from llmshearing.devices import add_device_argument, chosen_device, torch_dtype
from llmshearing.errors import ConfigError

DTYPE_NAMES = ("bfloat16", "float32")
DEFAULT_PROG = "python -m llmshearing.data.reference_loss"


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
                             device: str = "cpu", dtype: str = "float32") -> Dict[str, float]:
    from llmshearing.convert.sources import load_model
    from llmshearing.data.corpus import load_manifest
    from llmshearing.dynamic_loading.domain_loss import domain_loss_sums
    from llmshearing.data.loaders import build_eval_dataloaders

    manifest = load_manifest(data_dir)
    domains = list(domains or manifest["domains"])
    loaders = build_eval_dataloaders(data_dir, domains, batch_size=batch_size,
                                     seq_len=seq_len or int(manifest["seq_len"]), max_batches=batches)
    model = load_model(model_path, dtype=torch_dtype(dtype)).to(device).eval()

    def to_device(batch):
        return {key: value.to(device) for key, value in batch.items()}

    sums, counts = domain_loss_sums(lambda batch: model(batch["input_ids"]), list(loaders.values()), to_device)
    return {domain: float(total / count) for domain, total, count in zip(domains, sums, counts)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF dir, .gguf, Composer checkpoint or 'smollm2'")
    parser.add_argument("--data", required=True, help="corpus dir with <domain>/eval MDS splits")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--domains", nargs="+", help="default: every domain of the corpus")
    parser.add_argument("--batches", type=int, default=8, help="eval batches per domain (default 8)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, help="default: the corpus's sample length")
    add_device_argument(parser)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    parser.set_defaults(work=compute_and_write)


def compute_and_write(args: argparse.Namespace) -> None:
    losses = compute_reference_losses(args.model, args.data, args.domains, args.batches, args.batch_size,
                                      args.seq_len, chosen_device(args.device), args.dtype)
    for domain, loss in losses.items():
        print(f"{domain}: {loss:.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"reference_losses": losses, "model": args.model, "data": args.data,
              "batches": args.batches, "batch_size": args.batch_size, "seq_len": args.seq_len}
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(out)


def main(argv: Optional[Sequence[str]] = None, prog: str = DEFAULT_PROG) -> int:
    return run_cli(command_parser(prog, __doc__, add_arguments), argv)


if __name__ == "__main__":
    sys.exit(main())
