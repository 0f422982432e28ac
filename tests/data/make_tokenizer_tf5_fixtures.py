"""Make the tokenizer_tf5_* fixtures: tiny tokenizers saved by transformers 5 (run under transformers 5).

    python3 -m venv /tmp/tf5 && /tmp/tf5/bin/pip install transformers==5.23.0 tokenizers jinja2
    /tmp/tf5/bin/python tests/data/make_tokenizer_tf5_fixtures.py tests/data

Each fixture folder gets what ``save_pretrained`` of transformers 5 writes (tokenizer.json,
tokenizer_config.json, chat_template.jinja where there is a template) plus expected.json: the ids,
special tokens and length that transformers 5 gives, which tests/test_tokenizer_compat.py compares
against what our pinned transformers loads. Not a test module (no test_ prefix); needs no torch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pruning removes heads, layers and hidden dimensions from a pretrained model.",
    "Sheared LLaMA keeps the most useful structure and continues pre-training.",
    "Hello world! Hello tokenizer. This is a tiny corpus for a tiny vocabulary.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 and symbols: (a+b)*c = d; e/f - g.",
    "the the the and and and of of to to in in is is that that it it",
    "Tokens, merges, bytes and special tokens are saved in tokenizer.json.",
]

# Strings whose ids the tests compare: plain, punctuation, digits, leading/trailing spaces, newlines,
# characters outside the training corpus (byte fallback / byte-level), an embedded special token.
PROBES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing  ",
    "line one\nline two\n\nend",
    "digits 12345 and (symbols) = ok",
    "Ünïcödé – naïve café 日本",
    "pruned model</s> after eos",
    "<|im_start|>user\nhi<|im_end|>",
]

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

QWEN_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
              r"""\s*[\r\n]+|\s+(?!\S)|\s+""")


def llama_backend() -> Tokenizer:
    """SentencePiece-style BPE as LLaMA 1/2 ship it: Metaspace, byte fallback, <s> added by the post-processor."""
    specials = ["<unk>", "<s>", "</s>"]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    trainer_tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=160, special_tokens=specials,
                                                                show_progress=False))
    trained = json.loads(trainer_tok.to_str())["model"]
    # LLaMA's layout: the specials, then the 256 byte-fallback tokens, then the learnt pieces
    ordered = specials + [f"<0x{byte:02X}>" for byte in range(256)]
    ordered += [piece for piece, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]) if piece not in specials]
    vocab = {piece: index for index, piece in enumerate(ordered)}
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split(" ")) for merge in trained["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    tok.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in specials])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", vocab["<s>"])])
    return tok


def qwen2_backend() -> Tokenizer:
    """GPT-2 byte-level BPE with Qwen2's pre-tokenizer regex, NFC and its special tokens; adds no BOS."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # Qwen2 keeps its specials after the learnt vocabulary
    tok.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in specials])
    return tok


def _dumps(expected: dict) -> str:
    """JSON with one line per probe string, so a diff of expected.json reads per string."""
    def block(value, indent):
        if not isinstance(value, dict) or indent > 1:
            return json.dumps(value, ensure_ascii=False)
        pad = " " * (indent + 1)
        inner = ",\n".join(f"{pad}{json.dumps(k, ensure_ascii=False)}: {block(v, indent + 1)}" for k, v in value.items())
        return "{\n" + inner + "\n" + " " * indent + "}"
    return block(expected, 0) + "\n"


def make(out: Path) -> None:
    import transformers
    from transformers import PreTrainedTokenizerFast

    from transformers import LlamaTokenizer, Qwen2Tokenizer

    qwen = json.loads(qwen2_backend().to_str())
    qwen_vocab = dict(qwen["model"]["vocab"])
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):  # after the learnt pieces, as in Qwen2
        qwen_vocab[token] = next(entry["id"] for entry in qwen["added_tokens"] if entry["content"] == token)
    llama = json.loads(llama_backend().to_str())["model"]
    fixtures = {
        # a tokenizer.json wrapped as PreTrainedTokenizerFast (LLaMA 3, SmolLM2 and many fine-tunes name that
        # class): transformers 5 saves it as class TokenizersBackend, which transformers 4 does not know
        "llama": PreTrainedTokenizerFast(tokenizer_object=llama_backend(), bos_token="<s>", eos_token="</s>",
                                         unk_token="<unk>"),
        # a Qwen2 checkpoint as transformers 5 loads and saves it: class Qwen2Tokenizer, its
        # additional_special_tokens saved as a list under extra_special_tokens, the chat template in
        # chat_template.jinja
        "qwen2": Qwen2Tokenizer(vocab=qwen_vocab, merges=[tuple(m) for m in qwen["model"]["merges"]],
                                unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                extra_special_tokens=["<|im_start|>", "<|im_end|>"],
                                chat_template=QWEN_CHAT_TEMPLATE),
        # transformers 5's LlamaTokenizer that adds no BOS: the config no longer says so (v5 saves no
        # add_bos_token), only the post-processor in tokenizer.json does
        "llama_nobos": LlamaTokenizer(vocab=llama["vocab"], merges=[tuple(m) for m in llama["merges"]],
                                      add_bos_token=False),
    }
    for name, tokenizer in fixtures.items():
        folder = out / f"tokenizer_tf5_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(folder))
        reloaded = transformers.AutoTokenizer.from_pretrained(str(folder))
        expected = {
            "made_with": {"transformers": transformers.__version__,
                          "tokenizers": __import__("tokenizers").__version__},
            "tokenizer_class": type(reloaded).__name__,
            "len": len(reloaded),
            "special_tokens": {key: getattr(reloaded, key) for key in
                               ("bos_token", "eos_token", "unk_token", "pad_token")},
            "special_token_ids": {key: getattr(reloaded, key) for key in
                                  ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id")},
            "ids": {text: reloaded(text)["input_ids"] for text in PROBES},
            "ids_no_special": {text: reloaded(text, add_special_tokens=False)["input_ids"] for text in PROBES},
            "decoded": {text: reloaded.decode(reloaded(text, add_special_tokens=False)["input_ids"])
                        for text in PROBES},
        }
        if reloaded.chat_template:
            expected["chat"] = reloaded.apply_chat_template(
                [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
        (folder / "expected.json").write_text(_dumps(expected), encoding="utf-8")
        print(folder, sorted(p.name for p in folder.iterdir()), len(reloaded))


if __name__ == "__main__":
    make(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent))
