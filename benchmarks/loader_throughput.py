"""Dynamic batch loading: loader throughput vs a plain StreamingDataset, and the cost of an update.

    python benchmarks/loader_throughput.py loader --corpus demo_out/corpus --workers 2
    python benchmarks/loader_throughput.py update --shape smollm2 --seq-len 128 --batch 4 --interval 50

``loader``: samples/s delivered by (a) the static mixture loader (one StreamingDataset, its own
shuffle), (b) the dynamic loader in static mode, (c) the dynamic loader publishing new weights
every ``--interval`` steps, as the training callback does (workers wait for each new window).
Same shards, batch size, sequence length and workers; the median of ``--repeats`` runs each.

``update``: the training-time overhead of one weight update every ``--interval`` steps: a
training step (forward + backward + AdamW, as in mask_overhead.py) vs the per-domain loss
measurement of each loss source (``eval``: ``--loss-batches`` eval batches per domain, ``train``:
per-sample losses of the step's own logits) plus applying the update rule. Prints JSON lines.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import platform
import statistics
import time

import numpy as np
import torch

from llmshearing.data.corpus import load_manifest
from llmshearing.dynamic_loading.domain_loss import domain_loss_sums, sample_token_losses
from llmshearing.dynamic_loading.loader import build_dynamic_train_dataloader
from llmshearing.data.loaders import build_eval_dataloaders, build_train_dataloader
from llmshearing.dynamic_loading.mixture_update import MixtureUpdate
from mask_overhead import time_steps  # benchmarks/ is the script's folder
from shapes import SHAPES

MACHINE = platform.processor() or platform.machine()


def samples_per_second(batches, num_batches: int, on_batch=lambda step: None) -> float:
    start = time.perf_counter()
    samples = 0
    for step, batch in enumerate(itertools.islice(batches, num_batches), start=1):
        samples += len(batch["input_ids"])
        on_batch(step)
    return samples / (time.perf_counter() - start)


def endless(loader):
    while True:  # the plain loader ends at its epoch; a new iterator starts the next one
        yield from loader


def loader_benchmark(args) -> None:
    domains = load_manifest(args.corpus)["domains"]
    weights = np.full(len(domains), 1.0 / len(domains))

    def plain():
        loader = build_train_dataloader(args.corpus, domains, None, args.batch, args.seq_len, seed=1,
                                        num_workers=args.workers)
        return samples_per_second(endless(loader), args.batches)

    def dynamic(interval):
        loader = build_dynamic_train_dataloader(args.corpus, domains, None, args.batch, args.seq_len, seed=1,
                                                update_interval=interval, max_steps=args.batches,
                                                num_workers=args.workers)
        dataset = loader.dataset

        def publish(step):
            if interval and step % interval == 0:
                dataset.publish_weights(step, np.roll(weights, step // interval))
        return samples_per_second(iter(loader), args.batches, publish)

    runs = {"plain_streaming": plain, "dynamic_static": lambda: dynamic(None),
            "dynamic_updating": lambda: dynamic(args.interval)}
    rates = {name: statistics.median(run() for _ in range(args.repeats)) for name, run in runs.items()}
    print(json.dumps({
        "benchmark": "loader", "corpus": args.corpus, "batch": args.batch, "seq_len": args.seq_len,
        "workers": args.workers, "batches": args.batches, "update_interval": args.interval,
        "machine": MACHINE, **{f"{name}_samples_per_s": round(rate, 1) for name, rate in rates.items()},
        "dynamic_static_vs_plain_pct": round(100 * rates["dynamic_static"] / rates["plain_streaming"], 1),
        "dynamic_updating_vs_plain_pct": round(100 * rates["dynamic_updating"] / rates["plain_streaming"], 1),
    }))


def update_benchmark(args) -> None:
    from llmshearing.model import LlamaConfig
    from llmshearing.model.composer_model import ComposerLlama

    config = LlamaConfig(**SHAPES[args.shape])
    torch.manual_seed(0)
    model = ComposerLlama(dataclasses.replace(config)).train()
    batch = {"input_ids": torch.randint(0, config.vocab_size, (args.batch, args.seq_len))}
    step_s = statistics.median(time_steps(model, batch, args.steps, 1, torch.device("cpu")))

    domains = load_manifest(args.corpus)["domains"]
    loaders = list(build_eval_dataloaders(args.corpus, domains, args.eval_batch, args.seq_len,
                                          max_batches=args.loss_batches).values())
    rule = MixtureUpdate(np.full(len(domains), 2.0))

    def eval_update():
        sums, counts = domain_loss_sums(model, loaders)
        rule(np.full(len(domains), 1.0 / len(domains)), (sums / counts).numpy())

    def train_source():  # per step: per-sample losses from the logits the step computed anyway
        with torch.no_grad():
            sample_token_losses(model(batch), batch)

    eval_s = statistics.median(_timed(eval_update) for _ in range(args.steps))
    with torch.no_grad():
        logits = model(batch)
    per_sample_s = statistics.median(_timed(lambda: sample_token_losses(logits, batch)) for _ in range(args.steps))
    window_s = args.interval * step_s
    print(json.dumps({
        "benchmark": "update", "shape": args.shape, "seq_len": args.seq_len, "batch": args.batch,
        "interval": args.interval, "domains": len(domains), "loss_batches": args.loss_batches,
        "eval_batch": args.eval_batch, "machine": MACHINE, "torch": torch.__version__,
        "train_step_s": round(step_s, 4), "eval_source_update_s": round(eval_s, 4),
        "eval_source_overhead_pct": round(100 * eval_s / window_s, 2),
        "train_source_per_step_s": round(per_sample_s, 5),
        "train_source_overhead_pct": round(100 * per_sample_s / step_s, 2),
    }))


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("loader", "update"))
    parser.add_argument("--corpus", default="demo_out/corpus")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--interval", type=int, default=50)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps / measurements")
    parser.add_argument("--loss-batches", type=int, default=1)
    parser.add_argument("--eval-batch", type=int, default=4)
    args = parser.parse_args()
    (loader_benchmark if args.what == "loader" else update_benchmark)(args)


if __name__ == "__main__":
    main()
