"""Build the local lm-eval task's data: last-word prediction over a corpus's held-out (eval) text.

    python -m llmshearing.eval.lastword --data DIR [--out llmshearing/eval/lm_eval_tasks/corpus_lastword.jsonl]

Each eval sample of the prose-like domains is decoded with the corpus's tokenizer; whole sentences
after its first sentence break are joined until the passage has ``--min-words`` words, and a
passage is kept when it ends in a plain word (LAMBADA-style: predict the last word from the rest).
One JSON object a line: {"domain", "text"}; the task yaml splits off the last word.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from llmshearing.cli.command import command_parser, run_cli

DEFAULT_OUT = Path(__file__).parent / "lm_eval_tasks" / "corpus_lastword.jsonl"
PROSE_DOMAINS = ("prose", "encyclopedia", "technical", "mail")  # code has no "last word"
SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
LAST_WORD = re.compile(r"[A-Za-z]{3,}")


def passage(text: str, min_words: int) -> Optional[str]:
    """Whole sentences after the first break, at least ``min_words`` words, final punctuation off."""
    sentences = SENTENCE_BREAK.split(" ".join(text.split()))[1:-1]  # first and last may be cut
    words: List[str] = []
    for sentence in sentences:
        words.extend(sentence.split())
        if len(words) >= min_words:
            words[-1] = words[-1].rstrip(".!?")
            return " ".join(words) if LAST_WORD.fullmatch(words[-1]) else None
    return None


def lastword_examples(data_dir, per_domain: int, min_words: int, domains: Sequence[str] = PROSE_DOMAINS) -> Iterator[dict]:
    from streaming import LocalDataset

    from llmshearing.assets import load_tokenizer
    from llmshearing.data.corpus import domain_split_dir, load_manifest

    tokenizer = load_tokenizer()  # the corpus builder's tokenizer (SmolLM2's)
    available = [d for d in domains if d in load_manifest(data_dir)["domains"]]
    for domain in available:
        samples, kept = LocalDataset(local=str(domain_split_dir(data_dir, domain, "eval"))), 0
        for index in range(len(samples)):
            text = passage(tokenizer.decode(samples[index]["tokens"]), min_words)
            if text is not None:
                kept += 1
                yield {"domain": domain, "text": text}
            if kept == per_domain:
                break


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="corpus dir from data_prep/build_sample_corpus.py")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--per-domain", type=int, default=16)
    parser.add_argument("--min-words", type=int, default=40)
    parser.set_defaults(work=write_examples)


def write_examples(args: argparse.Namespace) -> None:
    examples = list(lastword_examples(args.data, args.per_domain, args.min_words))
    args.out.write_text("".join(json.dumps(e) + "\n" for e in examples), encoding="utf-8")
    print(f"{len(examples)} examples")
    print(args.out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(command_parser("python -m llmshearing.eval.lastword", __doc__, add_arguments), argv)


if __name__ == "__main__":
    sys.exit(main())
