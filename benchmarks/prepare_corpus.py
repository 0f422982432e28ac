"""Corpus preparation speed, memory and size: ``python -m llmshearing.data.prepare`` on generated text.

    python benchmarks/prepare_corpus.py [--input-mb 50] [--workers 1 2] [--big-gb 2] [--out results.json]

1. Input: a JSONL file of ``--input-mb`` MB of real text found offline (license texts of
   /usr/share/common-licenses and /usr/share/doc/*/copyright, and Python standard-library sources),
   cut into paragraphs and shuffled with a fixed seed into documents of 1-20 KB (3 of 4 documents
   English, 1 of 4 Python code), written into a temporary folder.
2. Speed, side by side in one run: for each ``--workers`` value, the HF fast tokenizer's own batch
   encoding of the same texts in this process (``tokenizer(texts, add_special_tokens=False)``, 256
   documents a call, texts already in memory, TOKENIZERS_PARALLELISM as the environment has it, so
   its rayon pool may use every CPU) is timed right before the real CLI
   (``python -m llmshearing.data.prepare --workers W ...`` as a subprocess: reading JSONL, encoding,
   splitting, writing MDS, merging). Both rates count the same tokens (the input's text tokens, as
   HF counted them): HF over its encoding time, prepare over its tokenizing phase (``seconds`` of its
   piece marker: from the worker pool's start to the last unit written; tokenizer loading and the
   merge are excluded, and reported in the end-to-end wall time). HF on one thread
   (TOKENIZERS_PARALLELISM=false) is measured once as the per-core reference.
3. Memory: peak RSS of the prepare process tree (``os.wait4``'s ``ru_maxrss``: the largest single
   process of the tree, main or worker) and the peak of the tree's summed PSS (sampled every 0.1 s
   from /proc) for the ``--input-mb`` input vs a generated ``--big-gb`` input (streamed to disk),
   prepared with the largest ``--workers``. The big input is shrunk so that, at the speed just
   measured, its run takes about ``--big-max-seconds`` at most (and it fits on the disk); the size
   used is reported. Generated files are deleted at the end (``--keep`` keeps them).
4. Size: bytes per stored token of the MDS shards the corpus's indexes list, and input bytes (text
   UTF-8 and JSONL file) per token.

Writes the results as JSON (``--out``) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HF_BATCH_DOCUMENTS = 256
DOC_BYTES = (1024, 20 * 1024)
CODE_SHARE = 0.25
GB = 10**9
MB = 10**6
SAMPLE_INTERVAL_S = 0.1
ENGLISH_SOURCES = ("/usr/share/common-licenses/*", "/usr/share/doc/*/copyright")
CODE_SOURCES = (f"{Path(os.__file__).parent}/**/*.py",)


# ---- input -------------------------------------------------------------------------------------
def paragraphs(patterns: tuple[str, ...]) -> list[str]:
    """The distinct non-empty paragraphs (blank-line separated) of the files matching ``patterns``,
    sorted (so the pool does not depend on the file system's order)."""
    found: set[str] = set()
    for pattern in patterns:
        for path in glob.glob(pattern, recursive=True):
            if "-packages" in path or not os.path.isfile(path):
                continue
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            found.update(part.strip("\n") for part in text.split("\n\n") if part.strip())
    return sorted(found)


def text_pools() -> dict[str, list[str]]:
    pools = {"english": paragraphs(ENGLISH_SOURCES), "code": paragraphs(CODE_SOURCES)}
    if not pools["english"] and not pools["code"]:
        raise SystemExit("no offline text found (/usr/share/common-licenses, /usr/share/doc, Python's sources)")
    return {name: pool for name, pool in pools.items() if pool}


def documents(pools: dict[str, list[str]], seed: int) -> Iterator[str]:
    """Endless documents of 1-20 KB: paragraphs of one pool, taken from a seeded shuffle of it
    (reshuffled when used up), so no two documents are the same string."""
    rng = random.Random(seed)
    orders = {name: [] for name in pools}

    def next_paragraph(name: str) -> str:
        if not orders[name]:
            orders[name] = list(pools[name])
            rng.shuffle(orders[name])
        return orders[name].pop()

    while True:
        name = "code" if "code" in pools and (rng.random() < CODE_SHARE or "english" not in pools) else "english"
        target = rng.randint(*DOC_BYTES)
        parts, size = [], 0
        while size < target:
            part = next_paragraph(name)
            parts.append(part)
            size += len(part) + 2
        yield "\n\n".join(parts)


def write_jsonl(path: Path, target_bytes: int, source: Iterator[str]) -> dict:
    """Documents from ``source`` as JSON lines until the file holds ``target_bytes`` (streamed)."""
    written = count = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target_bytes:
            line = json.dumps({"text": next(source)}) + "\n"
            handle.write(line)
            written += len(line.encode("utf-8"))
            count += 1
    return {"path": str(path), "bytes": written, "documents": count}


def read_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle]


# ---- HF baseline -------------------------------------------------------------------------------
def hf_encode(tokenizer, texts: list[str], parallelism: str | None) -> dict:
    """The fast tokenizer's batch encoding of ``texts``, 256 a call; ``parallelism`` None leaves
    TOKENIZERS_PARALLELISM as it is, else sets it for this measurement only."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    if parallelism is not None:
        os.environ["TOKENIZERS_PARALLELISM"] = parallelism
    try:
        tokens = 0
        wall, cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(texts), HF_BATCH_DOCUMENTS):
            encoded = tokenizer(texts[start:start + HF_BATCH_DOCUMENTS], add_special_tokens=False)["input_ids"]
            tokens += sum(len(ids) for ids in encoded)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        if before is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before
    return {"tokens": tokens, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "tokens_per_s": round(tokens / wall, 1),
            "parallelism": "as is" if parallelism is None else f"TOKENIZERS_PARALLELISM={parallelism}"}


# ---- prepare as a subprocess -------------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return pids


def _rollup_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


PHASES = ("startup", "tokenize", "merge")


class TreeSampler(threading.Thread):
    """Peaks of a process tree's memory, sampled from /proc every SAMPLE_INTERVAL_S, per phase of a
    prepare run: ``startup`` (imports, tokenizer loading) until the CLI logs its ``tokenizer:``
    line, ``tokenize`` (reading, encoding, writing units) until the piece marker exists, ``merge``."""

    def __init__(self, pid: int, log: Path, marker: Path):
        super().__init__(daemon=True)
        self.pid, self.log, self.marker = pid, log, marker
        self.peaks = {phase: {"pss_tree_kb": 0, "rss_tree_sum_kb": 0, "rss_largest_process_kb": 0,
                              "processes": 0, "samples": 0} for phase in PHASES}
        self._done = threading.Event()

    def phase(self) -> str:
        if self.marker.is_file():
            return "merge"
        try:
            return "tokenize" if "tokenizer:" in self.log.read_text(errors="replace") else "startup"
        except OSError:
            return "startup"

    def run(self) -> None:
        while not self._done.is_set():
            phase = self.phase()
            pids = _tree(self.pid)
            rss = [_rollup_kb(pid, "Rss") for pid in pids]
            sample = {"pss_tree_kb": sum(_rollup_kb(pid, "Pss") for pid in pids), "rss_tree_sum_kb": sum(rss),
                      "rss_largest_process_kb": max(rss, default=0), "processes": len(pids)}
            peaks = self.peaks[phase]
            for key, value in sample.items():
                peaks[key] = max(peaks[key], value)
            peaks["samples"] += 1
            self._done.wait(SAMPLE_INTERVAL_S)

    def stop(self) -> dict:
        self._done.set()
        self.join()
        return {phase: {key.replace("_kb", "_mb"): (round(value / 1024, 1) if peaks["samples"] else None)
                        if key.endswith("_kb") else value for key, value in peaks.items()}
                for phase, peaks in self.peaks.items()}  # None: the phase was shorter than a sample


def prepare_command(input_path: Path, out: Path, workers: int, args) -> list[str]:
    return [sys.executable, "-m", "llmshearing.data.prepare", "--tokenizer", args.tokenizer, "--out", str(out),
            "--seq-len", str(args.seq_len), "--domain", f"bench={input_path}", "--train-tokens", "all",
            "--eval-tokens", args.eval_tokens, "--workers", str(workers), "--no-progress", "--overwrite",
            *([] if args.eval_pool_fraction is None else ["--eval-pool-fraction", str(args.eval_pool_fraction)])]


def _wait(process: subprocess.Popen, timeout: float):
    """``os.wait4`` of the process (its rusage covers its reaped workers too), or (None, None) after
    killing its process group when it runs past ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            return status, usage
        if time.monotonic() > deadline:
            os.killpg(process.pid, 9)  # the run's own session: prepare and its workers
            os.wait4(process.pid, 0)
            return None, None
        time.sleep(0.05)


def run_prepare(input_path: Path, out: Path, workers: int, args, parallelism: str | None = None) -> dict:
    """One prepare run in a fresh process: wall time, tokenizing-phase time, memory, corpus size.
    ``parallelism``: TOKENIZERS_PARALLELISM for the run (None: the environment's)."""
    from llmshearing.data.prepare.state import PreparePaths

    command = prepare_command(input_path, out, workers, args)
    env = dict(os.environ)
    if parallelism is not None:
        env["TOKENIZERS_PARALLELISM"] = parallelism
    log = out.with_name(out.name + ".log")
    marker = PreparePaths(out).piece_marker(0, 1)
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
        sampler = TreeSampler(process.pid, log, marker)
        sampler.start()
        status, usage = _wait(process, args.run_timeout)
        phases = sampler.stop()
    wall = time.perf_counter() - started
    if status is None:
        raise SystemExit(f"prepare did not finish in {args.run_timeout:g} s and was killed: {' '.join(command)}\n"
                         f"{log.read_text()[-3000:]}")
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"prepare failed ({process.returncode}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    seconds = json.loads(marker.read_text())["seconds"]
    return {"workers": workers,
            "tokenizers_parallelism": "as is" if parallelism is None else parallelism,
            "command": ("" if parallelism is None else f"TOKENIZERS_PARALLELISM={parallelism} ")
            + " ".join(["python", *command[1:]]),
            "wall_s": round(wall, 2),
            "tokenize_s": max(seconds, 0.05),  # prepare rounds it to 0.1 s
            "peak_rss_largest_process_mb": round(usage.ru_maxrss / 1024, 1),  # exact, whole run
            "memory_by_phase": phases, **corpus_size(out)}


def corpus_size(out: Path) -> dict:
    """Tokens the corpus's split indexes hold and the bytes of the MDS shards they list."""
    manifest = json.loads((out / "manifest.json").read_text())
    seq_len, stored_tokens, mds_bytes, shards = manifest["seq_len"], 0, 0, 0
    for index_path in out.glob("*/*/index.json"):
        for shard in json.loads(index_path.read_text())["shards"]:
            stored_tokens += shard["samples"] * seq_len
            mds_bytes += shard["raw_data"]["bytes"]
            shards += 1
    splits = {name: stats for domain in manifest["per_domain"].values()
              for name, stats in domain.items() if isinstance(stats, dict) and "tokens" in stats}
    return {"stored_tokens": stored_tokens, "mds_bytes": mds_bytes, "shards": shards,
            "mds_bytes_per_token": round(mds_bytes / max(stored_tokens, 1), 4),
            "token_dtype": manifest["token_dtype"], "split_tokens": {k: v["tokens"] for k, v in splits.items()}}


# ---- machine -----------------------------------------------------------------------------------
def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    ram = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    import tokenizers
    import transformers

    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)), "cpu": cpu,
            "ram_gb": round(ram / 2**30, 1), "python": platform.python_version(),
            "tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
            "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
            "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS"),
            "rayon_threads": int(os.environ.get("RAYON_NUM_THREADS") or len(os.sched_getaffinity(0)))}


def load_average() -> list[float]:
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


# ---- report ------------------------------------------------------------------------------------
def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(results: dict) -> str:
    size = results["input"]
    lines = [f"Input: {size['bytes'] / MB:,.1f} MB JSONL, {size['documents']:,} documents, "
             f"{size['text_tokens']:,} text tokens ({size['text_bytes_per_token']} text bytes, "
             f"{size['jsonl_bytes_per_token']} JSONL bytes per token). Rayon may use "
             f"{results['machine']['rayon_threads']} threads.", "",
             "| workers | TOKENIZERS_PARALLELISM | HF batch encode beside it (tokens/s) | prepare, tokenizing phase "
             "(tokens/s) | prepare / HF | prepare / HF on 1 thread | vs prepare 1 worker 1 thread | end-to-end wall (s) "
             "| peak PSS of the tree while tokenizing (MB) | MDS bytes / token |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        scaling = run.get("scaling_vs_one_thread")
        lines.append(f"| {run['workers']} | {run['tokenizers_parallelism']} | {run['hf']['tokens_per_s']:,.0f} "
                     f"({run['hf']['parallelism']}) | {run['prepare_tokens_per_s']:,.0f} | "
                     f"{100 * run['prepare_vs_hf']:.0f} % | {100 * run['prepare_vs_hf_single_thread']:.0f} % | "
                     f"{'-' if scaling is None else f'{scaling:.2f}×'} | {run['wall_s']:.1f} | "
                     f"{_mb(run['memory_by_phase']['tokenize']['pss_tree_mb'])} | {run['mds_bytes_per_token']} |")
    memory = results.get("memory")
    if memory:
        lines += ["", f"Memory (workers {memory['big']['workers']}; big input limited by: "
                      f"{memory['limited_by']}):", "",
                  "| input (JSONL) | stored tokens | tokenizing phase (s) | stored tokens/s | peak RSS, largest "
                  "process, whole run (MB) | startup: peak PSS tree (MB) | tokenizing: peak PSS tree (MB) | "
                  "tokenizing: largest process RSS (MB) | merge: peak PSS tree (MB) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label in ("small", "big"):
            run = memory[label]
            phases = run["memory_by_phase"]
            lines.append(f"| {run['input_bytes'] / GB:,.3f} GB | {run['stored_tokens']:,} | {run['tokenize_s']} | "
                         f"{run['stored_tokens'] / run['tokenize_s']:,.0f} | "
                         f"{_mb(run['peak_rss_largest_process_mb'])} | {_mb(phases['startup']['pss_tree_mb'])} | "
                         f"{_mb(phases['tokenize']['pss_tree_mb'])} | "
                         f"{_mb(phases['tokenize']['rss_largest_process_mb'])} | "
                         f"{_mb(phases['merge']['pss_tree_mb'])} |")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-mb", type=float, default=50, help="size of the timed JSONL input (MB)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="prepare --workers values")
    parser.add_argument("--big-gb", type=float, default=2, help="size of the memory run's input (GB); 0 skips it")
    parser.add_argument("--big-max-seconds", type=float, default=300,
                        help="shrink the big input so its run takes about this long at the measured speed")
    parser.add_argument("--tokenizer", default="smollm2", help="prepare's --tokenizer (default %(default)s)")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--eval-tokens", default="200K", help="prepare's --eval-tokens (default %(default)s)")
    parser.add_argument("--eval-pool-fraction", type=float,
                        help="prepare's --eval-pool-fraction (default: prepare's own; tiny inputs need one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated text")
    parser.add_argument("--run-timeout", type=float, default=1800,
                        help="kill a prepare run (and fail) after this many seconds")
    parser.add_argument("--workdir", type=Path, help="where to generate inputs and corpora (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--out", type=Path, help="results JSON")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from llmshearing.data.prepare.cli import load_prepare_tokenizer

    workdir = Path(tempfile.mkdtemp(prefix="prepare_bench_", dir=args.workdir))
    results = {"benchmark": "prepare_corpus", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["python", "benchmarks/prepare_corpus.py", *(sys.argv[1:] if argv is None
                                                                                 else argv)]),
               "machine": machine(), "load_average_start": load_average(),
               "settings": {"tokenizer": args.tokenizer, "seq_len": args.seq_len, "eval_tokens": args.eval_tokens,
                            "hf_batch_documents": HF_BATCH_DOCUMENTS, "seed": args.seed,
                            "document_bytes": list(DOC_BYTES), "code_share": CODE_SHARE}}
    try:
        pools = text_pools()
        results["text_sources"] = {name: {"paragraphs": len(pool), "bytes": sum(map(len, pool))}
                                   for name, pool in pools.items()}
        small = workdir / "input.jsonl"
        info = write_jsonl(small, int(args.input_mb * MB), documents(pools, args.seed))
        texts = read_texts(small)
        tokenizer, _ = load_prepare_tokenizer(args.tokenizer)
        hf_encode(tokenizer, texts[:HF_BATCH_DOCUMENTS], None)  # warm-up: rayon pool, BPE cache
        single = hf_encode(tokenizer, texts, "false")
        text_tokens = single["tokens"]
        text_bytes = sum(len(text.encode("utf-8")) for text in texts)
        results["input"] = {**info, "text_bytes": text_bytes, "text_tokens": text_tokens,
                            "text_bytes_per_token": round(text_bytes / text_tokens, 3),
                            "jsonl_bytes_per_token": round(info["bytes"] / text_tokens, 3)}
        results["hf_single_thread"] = single
        runs = []
        plan = [(workers, None) for workers in args.workers]
        if 1 in args.workers:  # one worker on one core: the per-core reference of the scaling
            plan.insert(args.workers.index(1) + 1, (1, "false"))
        for workers, parallelism in plan:
            hf = hf_encode(tokenizer, texts, parallelism)  # beside the run, in the same setting
            corpus = workdir / f"corpus_w{workers}{'' if parallelism is None else '_one_thread'}"
            run = run_prepare(small, corpus, workers, args, parallelism)
            rate = text_tokens / run["tokenize_s"]
            run.update(hf=hf, load_average=load_average(), input_bytes=info["bytes"],
                       prepare_tokens_per_s=round(rate, 1),
                       prepare_end_to_end_tokens_per_s=round(text_tokens / run["wall_s"], 1),
                       prepare_vs_hf=round(rate / hf["tokens_per_s"], 3),
                       prepare_vs_hf_single_thread=round(rate / single["tokens_per_s"], 3))
            runs.append(run)
            shutil.rmtree(corpus, ignore_errors=True)
        one_core = next((run for run in runs if run["workers"] == 1 and run["tokenizers_parallelism"] == "false"),
                        None)
        for run in runs:
            if one_core is not None:
                run["scaling_vs_one_thread"] = round(run["prepare_tokens_per_s"] / one_core["prepare_tokens_per_s"], 3)
        results["runs"] = runs
        del texts
        if args.big_gb > 0:
            results["memory"] = memory_runs(args, pools, workdir, runs, info)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["load_average_end"] = load_average()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results))
    return results


def memory_runs(args, pools, workdir: Path, runs: list[dict], small_info: dict) -> dict:
    """Peak memory on the small input (its run at the largest worker count) vs a big one."""
    reference = max((run for run in runs if run["tokenizers_parallelism"] == "as is"),
                    key=lambda run: run["workers"])
    bytes_per_s = small_info["bytes"] / reference["tokenize_s"]
    by_time = int(bytes_per_s * args.big_max_seconds)
    free = shutil.disk_usage(workdir).free
    by_disk = int(free / 3)  # the input, its corpus (about half its size) and room to spare
    asked = int(args.big_gb * GB)
    size = min(asked, by_time, by_disk)
    limited_by = "nothing (the size asked)" if size == asked else (
        f"time (--big-max-seconds {args.big_max_seconds:g})" if size == by_time else "disk space")
    big = workdir / "big.jsonl"
    started = time.perf_counter()
    info = write_jsonl(big, size, documents(pools, args.seed + 1))
    generate_s = time.perf_counter() - started
    try:
        run = run_prepare(big, workdir / "corpus_big", reference["workers"], args)
    finally:
        big.unlink()
        shutil.rmtree(workdir / "corpus_big", ignore_errors=True)
    run.update(input_bytes=info["bytes"], documents=info["documents"], generate_s=round(generate_s, 1),
               load_average=load_average())
    small = {key: reference[key] for key in ("workers", "command", "input_bytes", "stored_tokens", "tokenize_s",
                                              "wall_s", "peak_rss_largest_process_mb", "memory_by_phase",
                                              "mds_bytes_per_token")}
    return {"asked_bytes": asked, "used_bytes": info["bytes"], "limited_by": limited_by,
            "disk_free_bytes": free, "estimated_tokenize_s": round(info["bytes"] / bytes_per_s, 1),
            "small": small, "big": run}


if __name__ == "__main__":
    main()
