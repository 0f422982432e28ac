"""Where each kind of model path keeps its tokenizer, and the commands that follow it."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from llmshearing.assets import smollm2_gguf_path
from llmshearing.config.schema import TrainConfig
from llmshearing.tokenizer_files import checkpoint_tokenizer_dir, model_tokenizer_path
from tests.test_convert import run_cli, save_tiny_hf, save_tiny_tokenizer

VOCAB = 97


@pytest.fixture
def converted(tmp_path, capsys):
    """An HF dir with a tokenizer, imported as ckpt/model.pt (its tokenizer written to ckpt/model.tokenizer)."""
    save_tiny_hf(tmp_path / "hf", vocab_size=VOCAB)
    save_tiny_tokenizer(tmp_path / "hf", VOCAB)
    checkpoint = tmp_path / "ckpt" / "model.pt"
    code, _, err = run_cli(capsys, "hf-to-composer", tmp_path / "hf", checkpoint)
    assert code == 0, err
    return tmp_path / "hf", checkpoint


def test_every_kind_of_model_path_names_its_tokenizer(converted, tmp_path):
    hf_dir, checkpoint = converted
    assert model_tokenizer_path(hf_dir) == hf_dir
    assert model_tokenizer_path(checkpoint) == checkpoint_tokenizer_dir(checkpoint) == tmp_path / "ckpt" / "model.tokenizer"
    assert model_tokenizer_path("smollm2") == smollm2_gguf_path()
    assert model_tokenizer_path(None) is None

    save_tiny_hf(tmp_path / "bare", vocab_size=VOCAB)  # an HF dir without tokenizer files
    assert model_tokenizer_path(tmp_path / "bare") is None
    run = tmp_path / "run"
    run.mkdir()
    (run / "ep0-ba10-rank0.pt").write_bytes(b"")
    assert model_tokenizer_path(run / "ep0-ba10-rank0.pt") is None
    (run / "tokenizer").mkdir()  # a training run's one tokenizer for all its checkpoints
    assert model_tokenizer_path(run / "ep0-ba10-rank0.pt") == run / "tokenizer"


def test_training_from_a_converted_checkpoint_keeps_its_tokenizer(converted, tmp_path):
    from transformers import AutoTokenizer

    from llmshearing.training import save_tokenizer

    _, checkpoint = converted
    written = {}
    artifacts = SimpleNamespace(write=lambda name, writer: writer(written.setdefault(name, tmp_path / "run" / name)))
    cfg = TrainConfig()
    cfg.model.path = str(checkpoint)
    save_tokenizer(cfg, VOCAB, artifacts)
    assert list(written) == ["tokenizer"]
    assert AutoTokenizer.from_pretrained(written["tokenizer"])("w3 w5")["input_ids"] == [3, 5]


def test_pruning_a_converted_checkpoint_exports_its_tokenizer(converted):
    from llmshearing.prune.cli import load_output_tokenizer

    _, checkpoint = converted
    tokenizer = load_output_tokenizer(SimpleNamespace(tokenizer=None, model=str(checkpoint)))
    assert tokenizer is not None and len(tokenizer) == VOCAB


def test_import_and_prune_take_the_source_tokenizer_or_warn_in_one_line(converted, tmp_path, capsys):
    """`import` and every pruning method load the source's tokenizer through one function, with a
    warning naming the reason when there is none (the model is still written)."""
    from llmshearing.prune.cli import load_output_tokenizer
    from llmshearing.tokenizer_files import load_source_tokenizer

    hf_dir, _ = converted
    assert len(load_source_tokenizer(hf_dir, lambda reason: f"unused {reason}")) == VOCAB
    assert len(load_output_tokenizer(SimpleNamespace(tokenizer=None, model=str(hf_dir)))) == VOCAB

    bare = tmp_path / "bare"
    save_tiny_hf(bare, vocab_size=VOCAB)
    broken = tmp_path / "broken"
    save_tiny_hf(broken, vocab_size=VOCAB)
    (broken / "tokenizer.json").write_text("{not json")
    for source, reason in ((bare, f"{bare} has no tokenizer"), (broken, f"could not load a tokenizer from {broken}")):
        capsys.readouterr()
        assert load_output_tokenizer(SimpleNamespace(tokenizer=None, model=str(source))) is None
        warning, = capsys.readouterr().err.splitlines()
        assert warning.startswith(f"warning: exporting without a tokenizer ({reason}")
        assert warning.endswith("); pass --tokenizer PATH")

        checkpoint = tmp_path / f"{source.name}-ckpt" / "model.pt"
        code, _, err = run_cli(capsys, "hf-to-composer", source, checkpoint)
        assert code == 0, err
        assert any(line.startswith(f"warning: no tokenizer taken from {source}: {reason}") for line in err.splitlines())
        assert checkpoint.is_file() and not checkpoint_tokenizer_dir(checkpoint).exists()
