"""Minitron: prune by activation importance to a target shape, or search shapes within a parameter budget.

    llmshearing prune minitron --model SRC --data DIR --out DST --target hidden_size=384,...
    llmshearing prune minitron --model SRC --data DIR --out DST --search --param-budget 70M

DST receives the HF model (+ tokenizer, pruning_plan.json), importance.json (reuse it with
--importance to re-slice to another target without recomputing) and, for a search, search.md/.csv.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from llmshearing.errors import ConfigError
from llmshearing.minitron.choices import AGGREGATIONS, DEPTH_METRICS, DEPTH_SELECTIONS, IMPORTANCE_FILE, ORDERS
from llmshearing.prune.cli import add_calibration_arguments, add_source_arguments

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    add_calibration_arguments(parser)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--target", help="target shape, e.g. hidden_size=384,num_attention_heads=6,"
                      "num_key_value_heads=2,num_hidden_layers=20,intermediate_size=1024 (missing keys: unchanged)")
    mode.add_argument("--search", action="store_true", help="search shapes within --param-budget; export the best")
    parser.add_argument("--importance", help=f"reuse the scores in this {IMPORTANCE_FILE} instead of computing them")
    parser.add_argument("--order", choices=ORDERS, default="joint",
                        help="joint: width and depth scores from the full model (single shot); depth-first / "
                        "width-first: the second axis is scored after pruning the first")
    parser.add_argument("--depth-metric", choices=DEPTH_METRICS, default="block_importance",
                        help="block_importance: 1 - cos(h_in, h_out); lm_loss: loss increase when the layer is "
                        "removed (one extra forward pass per layer)")
    parser.add_argument("--depth-selection", choices=DEPTH_SELECTIONS, default="top",
                        help="top: the best layers anywhere; contiguous: drop one contiguous block")
    parser.add_argument("--seq-agg", choices=AGGREGATIONS, default="mean", help="reduction over the sequence")
    parser.add_argument("--batch-agg", choices=AGGREGATIONS, default="l2", help="reduction over samples")
    search = parser.add_argument_group("architecture search (--search)")
    search.add_argument("--param-budget", help="parameter budget, e.g. 70M")
    search.add_argument("--budget-tolerance", type=float, default=0.05,
                        help="candidates have between (1 - tolerance) * budget and budget parameters")
    search.add_argument("--max-candidates", type=int, default=8, help="candidates pruned and evaluated")
    search.add_argument("--eval-batches", type=int, default=4, help="eval batches per domain for the ranking")
    search.add_argument("--retrain-top", type=int, default=0, help="distil the best N candidates before ranking")
    search.add_argument("--retrain-steps", type=int, default=20, help="steps of that short distillation")
    search.add_argument("--retrain-lr", type=float, default=1e-4)


def _check_arguments(args: argparse.Namespace) -> None:
    if args.search and not args.param_budget:
        raise ConfigError("--search needs --param-budget (e.g. 70M)")
    if args.param_budget and not args.search:
        raise ConfigError("--param-budget is only used with --search")
    if args.search and args.order != "joint":
        raise ConfigError("--search scores the source once (--order joint); depth-first / width-first need --target")


def _importance(args, source, target):
    from llmshearing.data.calibration import calibration_batches
    from llmshearing.minitron.importance import Importance
    from llmshearing.minitron.scoring import estimate_importance

    if args.importance:
        importance = Importance.load(args.importance)
        importance.check_source(source.config)
        log.info("importance scores read from %s", args.importance)
        return importance
    batches = calibration_batches(args.data, args.calib_samples, args.seq_len, args.batch_size, args.seed)
    log.info("calibration: %d sequences of %d tokens from %s", sum(len(b) for b in batches),
             batches[0].shape[1], args.data)
    importance = estimate_importance(
        source, batches, order=args.order, target=target, depth_metric=args.depth_metric,
        depth_selection=args.depth_selection, sequence=args.seq_agg, batch=args.batch_agg)
    importance.metadata["calibration"].update(data=str(args.data), seed=args.seed)
    return importance


def run(args: argparse.Namespace) -> Path:
    from llmshearing.convert import export_hf, load_model
    from llmshearing.devices import chosen_device
    from llmshearing.minitron.selection import build_plan
    from llmshearing.prune.cli import load_output_tokenizer, parse_target
    from llmshearing.shape import TargetShape
    from llmshearing.slicing import slice_model

    _check_arguments(args)
    args.device = chosen_device(args.device)
    source = load_model(args.model).to(args.device).eval()
    source.config.require_uniform("Minitron")  # before the tokenizer and the calibration set are read
    log.info("source %s: %.1fM parameters, on %s", args.model, sum(p.numel() for p in source.parameters()) / 1e6,
             args.device)
    tokenizer = load_output_tokenizer(args)
    if args.search:
        from llmshearing.minitron.candidates import candidate_shapes, parse_budget

        budget = parse_budget(args.param_budget)
        shapes = candidate_shapes(source.config, budget, args.budget_tolerance, args.max_candidates)
        importance = _importance(args, source, None)
        model, plan, candidates = _run_search(args, source, importance, shapes)
    else:
        target = TargetShape.from_mapping(parse_target(args.target), source.config)
        target.validate_against(source.config)
        importance = _importance(args, source, target)
        plan = build_plan(importance, target, depth_metric=args.depth_metric, depth_selection=args.depth_selection)
        model = slice_model(source, plan)
    log.info("writing %s", args.out)
    out = export_hf(model, args.out, tokenizer=tokenizer, plan=plan)
    importance.save(out / IMPORTANCE_FILE)
    if args.search:
        from llmshearing.minitron.search import write_ranking

        write_ranking(candidates, out, budget)
    return out


def _run_search(args, source, importance, shapes):
    from llmshearing.minitron.search import SearchSettings, best_model, search

    settings = SearchSettings(
        data_dir=args.data, seq_len=args.seq_len, batch_size=args.batch_size, eval_batches=args.eval_batches,
        depth_metric=args.depth_metric, depth_selection=args.depth_selection, retrain_top=args.retrain_top,
        retrain_steps=args.retrain_steps, retrain_lr=args.retrain_lr, seed=args.seed, device=args.device)
    candidates = search(source, importance, shapes, settings)
    return best_model(source, candidates[0]), candidates[0].plan, candidates
