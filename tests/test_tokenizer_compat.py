"""Tokenizers saved by transformers 5 load under our pinned transformers 4 (llmshearing.assets.load_tokenizer).

The fixtures in tests/data/tokenizer_tf5_* were saved by transformers 5.23.0 and carry expected.json:
the ids, special tokens, length and chat rendering transformers 5 gives (see tests/data/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import transformers

from llmshearing.assets import AssetError, load_tokenizer, save_tokenizer
from llmshearing.data.prepare.tokenizing import document_prefix

DATA = Path(__file__).parent / "data"
FIXTURES = ["llama", "qwen2", "llama_nobos"]
# the BOS each fixture's post-processor adds, as transformers 5 encodes it
EXPECTED_PREFIX = {"llama": [1], "qwen2": [], "llama_nobos": []}
# a transformers 5 interpreter for the save round trip (CI has none: that half is then skipped)
TF5_PYTHON = Path(os.environ.get("LLMSHEARING_TF5_PYTHON", "/tmp/tf5/bin/python"))
NAMED = ("bos_token", "eos_token", "unk_token", "pad_token")
BEFORE5 = int(transformers.__version__.split(".")[0]) < 5


def fixture_dir(name: str) -> Path:
    return DATA / f"tokenizer_tf5_{name}"


def expected(name: str) -> dict:
    return json.loads((fixture_dir(name) / "expected.json").read_text(encoding="utf-8"))


def check_like_transformers5(tokenizer, want: dict) -> None:
    for text, ids in want["ids"].items():
        assert tokenizer(text)["input_ids"] == ids, text
    for text, ids in want["ids_no_special"].items():
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids, text
        assert tokenizer.decode(ids) == want["decoded"][text], text
    assert {key: getattr(tokenizer, key) for key in NAMED} == want["special_tokens"]
    assert {f"{key}_id": getattr(tokenizer, f"{key}_id") for key in NAMED} == want["special_token_ids"]
    assert len(tokenizer) == want["len"]
    if "chat" in want:
        chat = [{"role": "user", "content": "hi"}]
        assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == want["chat"]
    else:
        assert not tokenizer.chat_template


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_was_saved_by_transformers5(name):
    folder = fixture_dir(name)
    assert expected(name)["made_with"]["transformers"].startswith("5.")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["backend"] == "tokenizers" and config["tokenizer_class"] == expected(name)["tokenizer_class"]


@pytest.mark.parametrize("name", FIXTURES)
def test_loads_with_transformers5_ids_and_special_tokens(name):
    check_like_transformers5(load_tokenizer(fixture_dir(name)), expected(name))


@pytest.mark.parametrize("name", FIXTURES)
def test_prepare_bos_detection(name):
    tokenizer = load_tokenizer(fixture_dir(name))
    assert document_prefix(tokenizer) == EXPECTED_PREFIX[name]


def test_qwen2_extra_special_tokens_stay_special():
    tokenizer = load_tokenizer(fixture_dir("qwen2"))
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= set(tokenizer.all_special_tokens)
    ids = tokenizer("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nhi"


@pytest.mark.parametrize("name", FIXTURES)
def test_saved_copy_loads_the_same(name, tmp_path):
    save_tokenizer(load_tokenizer(fixture_dir(name)), tmp_path / name)
    config = json.loads((tmp_path / name / "tokenizer_config.json").read_text(encoding="utf-8"))
    # under transformers 4 the copy is in 4's format, which its AutoTokenizer loads without the fallback
    assert ("backend" in config) == (not BEFORE5)
    check_like_transformers5(load_tokenizer(tmp_path / name), expected(name))


_TF5_PROBE = """
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
texts = json.loads(sys.argv[2])
chat = [{"role": "user", "content": "hi"}]
print(json.dumps({
    "ids": {text: tokenizer(text)["input_ids"] for text in texts},
    "special_tokens": {key: getattr(tokenizer, key) for key in ("bos_token", "eos_token", "unk_token", "pad_token")},
    "len": len(tokenizer),
    "chat": tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    if tokenizer.chat_template else None,
}))
"""


@pytest.mark.skipif(not TF5_PYTHON.is_file(), reason=f"no transformers 5 interpreter at {TF5_PYTHON}")
@pytest.mark.parametrize("name", FIXTURES)
def test_saved_copy_loads_in_transformers5(name, tmp_path):
    save_tokenizer(load_tokenizer(fixture_dir(name)), tmp_path / name)
    want = expected(name)
    run = subprocess.run([str(TF5_PYTHON), "-c", _TF5_PROBE, str(tmp_path / name), json.dumps(list(want["ids"]))],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["ids"] == want["ids"]
    assert got["special_tokens"] == want["special_tokens"]
    assert got["len"] == want["len"]
    assert got["chat"] == want.get("chat")


def _copy_fixture(name: str, to: Path) -> Path:
    to.mkdir()
    for file in fixture_dir(name).iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


def _assert_one_line(error: pytest.ExceptionInfo, folder: Path, file_named: str) -> None:
    """One line naming the folder; under transformers 4 (our fallback's message) also the bad file."""
    message = str(error.value)
    assert "\n" not in message and f"could not load a tokenizer from {folder}" in message, message
    assert file_named in message or not BEFORE5, message


def _break_tokenizer_json(folder: Path) -> None:
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nonsense"}}', encoding="utf-8")


def _remove_tokenizer_json(folder: Path) -> None:
    (folder / "tokenizer.json").unlink()


def _break_tokenizer_config(folder: Path) -> None:
    (folder / "tokenizer_config.json").write_text("{not json", encoding="utf-8")


@pytest.mark.parametrize("fixture, damage, file_named", [
    ("llama", _break_tokenizer_json, "tokenizer.json"),
    ("llama", _remove_tokenizer_json, "TokenizersBackend"),  # an unknown class and nothing to fall back on
    ("qwen2", _break_tokenizer_config, "tokenizer_config.json"),
])
def test_a_broken_tokenizer_folder_is_one_line(fixture, damage, file_named, tmp_path):
    folder = _copy_fixture(fixture, tmp_path / "tok")
    damage(folder)
    with pytest.raises(AssetError) as error:
        load_tokenizer(folder)
    _assert_one_line(error, folder, file_named)


def test_unknown_class_in_a_transformers4_config_falls_back(tmp_path):
    """A 4.x-style config (no "backend") naming a class this transformers lacks still loads from tokenizer.json."""
    folder = _copy_fixture("llama", tmp_path / "tok")
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    del config["backend"]
    config["tokenizer_class"] = "SomeFutureTokenizer"
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    check_like_transformers5(load_tokenizer(folder), expected("llama"))
