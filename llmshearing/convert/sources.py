"""Load a model from any supported source as our LlamaForCausalLM (training wraps it in a ComposerLlama).

Sources: a Hugging Face model directory (config.json + safetensors/bin, sharded or not), a GGUF
file (de-quantised by ``transformers``), or a Composer checkpoint (ours or one the Trainer wrote).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch

from llmshearing.convert.hf_files import iter_weight_shards
from llmshearing.convert.messages import first_line
from llmshearing.assets import resolve_model_path
from llmshearing.convert.weights import model_from_weights
from llmshearing.errors import CheckpointError, ConfigError
from llmshearing.model.config import LlamaConfig
from llmshearing.model.llama import LlamaForCausalLM

HF_DIR, GGUF, COMPOSER = "hf", "gguf", "composer"
GGUF_MAGIC = b"GGUF"
TORCH_MAGICS = (b"PK\x03\x04", b"\x80")  # torch.save's zip container; legacy pickle (protocol >= 2)
SUFFIX_FORMATS = {".gguf": GGUF, ".pt": COMPOSER, ".pth": COMPOSER, ".ckpt": COMPOSER}
EXPECTED = "a Hugging Face model directory, a .gguf file or a Composer .pt checkpoint"


def detect_format(path) -> str:
    """``"hf"``, ``"gguf"`` or ``"composer"``, from the directory layout or the file's first bytes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if path.is_dir():
        return _directory_format(path)
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic == GGUF_MAGIC:
        return GGUF
    if magic.startswith(TORCH_MAGICS):
        return COMPOSER
    if path.name == "config.json" or path.suffix in (".safetensors", ".bin"):
        raise CheckpointError(f"{path} is one file of a Hugging Face model; give its directory {path.parent}")
    if path.suffix in SUFFIX_FORMATS:
        kind = "GGUF file" if SUFFIX_FORMATS[path.suffix] == GGUF else "PyTorch/Composer checkpoint"
        raise CheckpointError(f"{path} is not a valid {kind} (corrupt or truncated?)")
    raise CheckpointError(f"{path}: unknown model format (expected {EXPECTED})")


def _directory_format(path: Path) -> str:
    if (path / "config.json").is_file():
        return HF_DIR
    if (path / ".metadata").is_file() or any(path.glob("*.distcp")):
        raise CheckpointError(f"{path} is a sharded (FSDP) Composer checkpoint, which is not supported; "
                              "save a monolithic checkpoint (fsdp_state_dict_type: full)")
    raise CheckpointError(f"{path} is a directory without config.json (expected {EXPECTED})")


def load_model(path, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """The model stored at ``path`` (any supported format, or the shortcut ``"smollm2"``) with ``dtype`` weights.

    A Composer checkpoint's L0 module state, if any, is not attached here; see
    ``llmshearing.convert.composer_checkpoint.load_composer_model``.
    """
    path = Path(resolve_model_path(path))
    kind = detect_format(path)
    if kind == HF_DIR:
        return model_from_weights(_hf_dir_config(path), iter_weight_shards(path), dtype, path)
    if kind == GGUF:
        return _load_gguf(path, dtype)
    from llmshearing.convert.composer_checkpoint import load_composer_model

    model, _ = load_composer_model(path, dtype=dtype)
    return model


def _our_config(hf_config, path: Path) -> LlamaConfig:
    try:
        return LlamaConfig.from_hf(hf_config)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc


def _strict_config_errors() -> tuple:
    """transformers 5 validates configs as huggingface_hub strict dataclasses, whose errors are no ValueError."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # the huggingface_hub of transformers 4
        return ()
    return (StrictDataclassError,)


def _hf_dir_config(path: Path) -> LlamaConfig:
    from transformers import AutoConfig

    try:
        hf_config = AutoConfig.from_pretrained(str(path))
    except _strict_config_errors() as exc:
        # e.g. a LLaMA with hidden 45 and 6 heads of head_dim 8 written under transformers 4: transformers 5's
        # LlamaConfig refuses the shape although head_dim defines the network; take the keys as written
        try:
            hf_config = json.loads((path / "config.json").read_text())
        except ValueError:
            raise CheckpointError(f"{path}/config.json cannot be read: {first_line(exc)}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}/config.json cannot be read: {first_line(exc)}") from exc
    return _our_config(hf_config, path)


def _gguf_rope_scaling(reader) -> str | None:
    """The RoPE scaling the GGUF holds, which transformers' GGUF reader drops (it builds unscaled RoPE), or None.

    llama.cpp writes linear / YaRN / ... scaling as ``{arch}.rope.scaling.*`` metadata and LLaMA 3's as a
    ``rope_freqs.weight`` tensor (Llama 3.1 / 3.2, Gemma 3 4B+ ...)."""
    if any(tensor.name == "rope_freqs.weight" for tensor in reader.tensors):
        return "per-frequency factors in rope_freqs.weight, as LLaMA 3.x has"
    arch = reader.fields["general.architecture"].contents()
    values = {key: reader.fields[f"{arch}.rope.{key}"].contents()
              for key in ("scaling.type", "scaling.factor", "scale_linear") if f"{arch}.rope.{key}" in reader.fields}
    factor = values.get("scaling.factor", values.get("scale_linear"))
    kind = values.get("scaling.type", "none" if factor is None else "linear")
    if kind == "none" or factor == 1.0:
        return None
    return f"{kind}, factor {factor}"


@contextmanager
def _gguf_opened_once(path: Path, reader):
    """transformers parses the GGUF itself, twice (for the config, then the weights): hand it ``reader``,
    the one already parsed, instead. It imports ``gguf.GGUFReader`` at each call; should that change, it
    opens the file itself again, which reads the same."""
    import gguf

    opener = gguf.GGUFReader

    def parsed(file, *args, **kwargs):
        if not (args or kwargs) and Path(file).resolve() == path.resolve():
            return reader
        return opener(file, *args, **kwargs)

    gguf.GGUFReader = parsed
    try:
        yield
    finally:
        gguf.GGUFReader = opener


def _load_gguf(path: Path, dtype: torch.dtype) -> LlamaForCausalLM:
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    try:
        reader = GGUFReader(str(path))
        rope_scaling = _gguf_rope_scaling(reader)
        if rope_scaling is None:
            with _gguf_opened_once(path, reader):
                hf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                                dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - the GGUF reader raises many types for a damaged file
        raise CheckpointError(f"{path} cannot be read as a GGUF model: {first_line(exc)}") from exc
    if rope_scaling is not None:
        raise CheckpointError(f"{path} has RoPE scaling ({rope_scaling}), which transformers' GGUF reader drops "
                              "(it would be a different model); convert the Hugging Face checkpoint instead")
    return model_from_weights(_our_config(hf_model.config, path), [hf_model.state_dict()], dtype, path)
