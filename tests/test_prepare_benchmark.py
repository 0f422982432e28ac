"""benchmarks/prepare_corpus.py on a tiny input with a tiny tokenizer: it runs the prepare CLI for
each worker and thread setting and the memory run, and writes its JSON (no timing thresholds)."""
from __future__ import annotations

import json

from tests.helpers import load_benchmark_script


def save_word_tokenizer(folder) -> None:
    """A word-level tokenizer (every word unknown) with the document separator prepare needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"<unk>": 0, "<|endoftext|>": 1, "the": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                            eos_token="<|endoftext|>").save_pretrained(folder)


def test_benchmark_writes_speed_memory_and_size(tmp_path, capsys):
    bench = load_benchmark_script("prepare_corpus")
    save_word_tokenizer(tmp_path / "tokenizer")
    out = tmp_path / "results.json"

    returned = bench.main(["--input-mb", "0.3", "--workers", "1", "2", "--big-gb", "0.0006",
                           "--tokenizer", str(tmp_path / "tokenizer"), "--seq-len", "64", "--eval-tokens", "1K",
                           "--eval-pool-fraction", "0.5", "--run-timeout", "300", "--workdir", str(tmp_path),
                           "--out", str(out)])

    results = json.loads(out.read_text())
    assert results == json.loads(json.dumps(returned))
    assert {"date", "command", "machine", "input", "hf_single_thread", "runs", "memory"} <= set(results)
    assert results["machine"]["nproc"] > 0 and results["machine"]["rayon_threads"] > 0
    size = results["input"]
    assert size["bytes"] >= 0.3e6 and size["documents"] > 0 and size["text_tokens"] > 0
    assert size["text_bytes_per_token"] > 0 and size["jsonl_bytes_per_token"] > size["text_bytes_per_token"]
    assert results["hf_single_thread"]["tokens"] == size["text_tokens"]

    runs = results["runs"]
    assert [(run["workers"], run["tokenizers_parallelism"]) for run in runs] == [(1, "as is"), (1, "false"),
                                                                                  (2, "as is")]
    for run in runs:
        for key in ("prepare_tokens_per_s", "prepare_vs_hf", "prepare_vs_hf_single_thread", "scaling_vs_one_thread",
                    "wall_s", "tokenize_s", "stored_tokens", "mds_bytes", "mds_bytes_per_token",
                    "peak_rss_largest_process_mb"):
            assert run[key] > 0, key
        assert run["hf"]["tokens"] == size["text_tokens"] and run["hf"]["tokens_per_s"] > 0
        sampled = [phase["pss_tree_mb"] for phase in run["memory_by_phase"].values() if phase["samples"]]
        assert sampled and all(value > 0 for value in sampled)
        assert run["mds_bytes_per_token"] >= 2  # uint16 tokens plus MDS's offsets
    assert runs[1]["scaling_vs_one_thread"] == 1.0

    memory = results["memory"]
    assert memory["big"]["input_bytes"] > memory["small"]["input_bytes"]
    for label in ("small", "big"):
        assert memory[label]["stored_tokens"] > 0 and memory[label]["peak_rss_largest_process_mb"] > 0
    assert not list(tmp_path.glob("prepare_bench_*"))  # generated inputs and corpora deleted
    assert "| workers |" in capsys.readouterr().out
