"""LLM Surgeon: K-FAC curvature pruning with correlated weight updates (structured, 2:4, unstructured).

    llmshearing prune surgeon --model SRC --data DIR --out DST --mode structured --density 0.7 --shots 8
    llmshearing prune surgeon --model SRC --data DIR --out DST --mode structured \
        --target num_attention_heads=6,num_key_value_heads=3,intermediate_size=384 --shots 4
    llmshearing prune surgeon --model SRC --data DIR --out DST --mode 2:4
    llmshearing prune surgeon --model SRC --data DIR --out DST --mode unstructured --density 0.5

DST receives the HF model (+ tokenizer), pruning_plan.json (structured: + pruning_plan.safetensors,
the updated source-shaped weights, so the plan re-slices the source without recomputing) and
surgeon_report.json (density per layer and projection, per-shot figures, factor memory).
Structured output is physically smaller: per-layer sizes by default (config.json lists them and DST
holds a modeling file: load with ``AutoModelForCausalLM.from_pretrained(DST, trust_remote_code=True)``),
a plain LLaMA with ``--uniform``. 2:4 and unstructured output is dense with zeros.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from llmshearing.prune.cli import add_calibration_arguments, add_source_arguments
from llmshearing.surgeon.choices import ALLOCATIONS, ATTENTION_UNITS, CURVATURES, HEAD, MATRIX, MODES, SCORINGS
from llmshearing.surgeon.settings import SurgeonSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    add_calibration_arguments(parser)
    parser.add_argument("--mode", choices=MODES, default="structured",
                        help="structured: remove MLP neurons and attention heads (sliced); 2:4; unstructured")
    parser.add_argument("--density", type=float, default=None,
                        help="fraction of the layers' projection weights kept, in (0, 1] (2:4: 0.5, the default)")
    parser.add_argument("--target", default=None,
                        help="structured: an exact shape instead of --density, the same in every layer (implies "
                             "--uniform), in HF config words: num_attention_heads, num_key_value_heads, "
                             "intermediate_size (hidden_size and num_hidden_layers stay the source's)")
    parser.add_argument("--shots", type=int, default=1,
                        help="reach the density in this many shots (linear schedule), curvature re-estimated in between")
    parser.add_argument("--uniform", action="store_true",
                        help="structured: the same number of heads/neurons in every layer (a plain LLaMA config); "
                             "default: each layer keeps its own (per-layer sizes, loaded with trust_remote_code)")
    parser.add_argument("--attention-unit", choices=ATTENTION_UNITS, default=HEAD,
                        help="structured: remove query heads (the same number per KV group) or whole KV groups")
    parser.add_argument("--allocation", choices=ALLOCATIONS, default=MATRIX,
                        help="2:4/unstructured: matrix (default): every projection at the density, its mask chosen "
                             "during the correlated update (SparseGPT-style); global: one threshold over all layers "
                             "(the LLM Surgeon paper's)")
    parser.add_argument("--curvature", choices=CURVATURES, default=None,
                        help="2:4/unstructured with --allocation matrix: sequential (default there): input factors A "
                             "layer by layer, from the activations that pass the already pruned layers (forward "
                             "passes, as SparseGPT calibrates); kfac: K-FAC factors G ⊗ A of the unpruned model from "
                             "one forward + backward pass (always for structured and --allocation global)")
    parser.add_argument("--no-row-scale", dest="row_scaled", action="store_false",
                        help="2:4/unstructured with --allocation matrix: weight costs without the 1/[G⁻¹]_ii factor of "
                             "their output row (which needs a forward + backward pass for G each shot; one 2:4 shot "
                             "never needs it)")
    parser.add_argument("--scoring", choices=SCORINGS, default="curvature",
                        help="magnitude: the F = I baseline (no curvature, no weight update)")
    parser.add_argument("--damping", type=float, default=0.01,
                        help="added to each K-FAC factor as this fraction of its mean diagonal")
    parser.add_argument("--factor-memory-gb", type=float, default=None,
                        help="memory for K-FAC factors; layers are processed in blocks that fit (default: half the free memory)")
    parser.add_argument("--finetune-steps", type=int, default=0,
                        help="LM-loss fine-tuning steps on the calibration set between shots (default: none)")
    parser.add_argument("--finetune-lr", type=float, default=1e-5)


def settings_from_args(args: argparse.Namespace) -> SurgeonSettings:
    from llmshearing.prune.cli import parse_target

    return SurgeonSettings(
        mode=args.mode, density=args.density, shots=args.shots, uniform=args.uniform,
        attention_unit=args.attention_unit, scoring=args.scoring, damping=args.damping,
        allocation=args.allocation, curvature=args.curvature, row_scaled=args.row_scaled,
        factor_memory_gb=args.factor_memory_gb, finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr,
        target=parse_target(args.target) if args.target else None,
    ).validate()


def run(args: argparse.Namespace) -> Path:
    from llmshearing.convert import load_model
    from llmshearing.data.calibration import calibration_batches
    from llmshearing.devices import chosen_device
    from llmshearing.prune.cli import load_output_tokenizer
    from llmshearing.surgeon.export import export_result
    from llmshearing.surgeon.shots import run_surgeon

    settings = settings_from_args(args)
    started = time.perf_counter()
    batches = calibration_batches(args.data, args.calib_samples, args.seq_len, args.batch_size, args.seed)
    model = load_model(args.model).to(chosen_device(args.device)).eval()
    settings.resolve_target(model.config)  # a shape error before anything else is loaded or written
    tokenizer = load_output_tokenizer(args)
    surgeon_run = run_surgeon(model, batches, settings)
    return export_result(model, surgeon_run, settings, args.out, tokenizer, started_at=started,
                         calibration={"data": str(args.data), "samples": args.calib_samples,
                                      "seq_len": int(batches[0].shape[1]), "seed": args.seed})
