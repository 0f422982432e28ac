"""Conversion: HF dir / GGUF -> ComposerLlama -> Composer checkpoint -> HF export, and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmshearing.convert import (
    detect_format,
    export_hf,
    load_composer_model,
    load_model,
    read_composer_checkpoint,
    save_composer_checkpoint,
)
from llmshearing.convert.cli import main as convert_main
from llmshearing.errors import CheckpointError
from llmshearing.model.composer_model import ComposerLlama
from llmshearing.plan import PruningPlan
from llmshearing.shape import TargetShape
from tests.helpers import tiny_config, tiny_model

try:
    from llmshearing.sheared.l0_module import L0Module
except ImportError:  # written concurrently; the prune tests wait for it
    L0Module = None

REPO = Path(__file__).resolve().parents[1]
needs_l0 = pytest.mark.skipif(L0Module is None, reason="llmshearing.sheared.l0_module is missing")

HF_VARIANTS = {
    "gqa_untied": dict(num_key_value_heads=2, tie_word_embeddings=False),
    "tied": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "llama3_rope": dict(
        num_key_value_heads=2, rope_theta=500000.0, max_position_embeddings=256,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64},
    ),
}
# tiny_config's source shape (hidden 45, 6 heads in 2 KV groups, 3 layers, MLP 37) cut down to:
PRUNE_TARGET = TargetShape(hidden_size=30, num_attention_heads=2, num_key_value_heads=1,
                           num_hidden_layers=2, intermediate_size=20)


# ---- builders -----------------------------------------------------------------------------------
def save_tiny_hf(folder: Path, **overrides):
    """A random transformers LlamaForCausalLM saved with save_pretrained; returned in eval mode."""
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM as HFLlamaForCausalLM

    values = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=8, max_position_embeddings=128, rms_norm_eps=1e-6,
                  initializer_range=0.2)
    values.update(overrides)
    torch.manual_seed(0)
    model = HFLlamaForCausalLM(HFLlamaConfig(**values)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5)
    model.save_pretrained(folder)
    return model


def tiny_composer(seed: int = 0, **overrides) -> ComposerLlama:
    model = ComposerLlama(tiny_config(**overrides))
    model.model.load_state_dict(tiny_model(seed, **overrides).state_dict())
    return model.eval()


def attach_random_l0(model: ComposerLlama, block_masks: bool, seed: int = 0) -> None:
    model.l0 = L0Module(model.config, PRUNE_TARGET, block_masks=block_masks)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in model.l0.gates.values():
            gate.log_alpha.copy_(torch.randn(gate.log_alpha.shape, generator=generator) * 2.0)


def token_batch(vocab_size: int, batch: int = 2, length: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def load_exported(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


def run_cli(capsys, *args) -> tuple:
    code = convert_main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cli_process(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "llmshearing.convert", *[str(arg) for arg in args]]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def make_trainer(model: ComposerLlama, **kwargs):
    from composer import Trainer

    samples = [{"input_ids": ids} for ids in token_batch(model.config.vocab_size, batch=4, length=8)]
    return Trainer(
        model=model,
        train_dataloader=torch.utils.data.DataLoader(samples, batch_size=2),
        optimizers=torch.optim.SGD(model.parameters(), lr=0.0),
        device="cpu",
        progress_bar=False,
        log_to_console=False,
        **kwargs,
    )


def assert_same_state(model: torch.nn.Module, state: dict) -> None:
    ours = model.state_dict()
    assert set(ours) == set(state)
    for key, value in ours.items():
        if torch.is_tensor(value):
            assert torch.equal(value, state[key]), key
        else:
            assert value == state[key], key


# ---- HF directory -> ours -> Composer checkpoint -> HF export --------------------------------------
@pytest.mark.parametrize("variant", sorted(HF_VARIANTS))
@torch.no_grad()
def test_hf_round_trip(tmp_path, variant):
    hf_model = save_tiny_hf(tmp_path / "hf", **HF_VARIANTS[variant])
    ids = token_batch(hf_model.config.vocab_size)
    expected = hf_model(ids).logits

    assert detect_format(tmp_path / "hf") == "hf"
    ours = load_model(tmp_path / "hf")
    tied = hf_model.config.tie_word_embeddings
    assert ours.config.tie_word_embeddings == tied
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tied
    assert max_diff(ours(ids), expected) <= 1e-5

    checkpoint = save_composer_checkpoint(ours, tmp_path / "ckpt" / "model.pt")
    assert detect_format(checkpoint) == "composer"
    assert_same_state(ComposerLlama.wrapping(ours), read_composer_checkpoint(checkpoint))
    reloaded, l0_state = load_composer_model(checkpoint)
    assert l0_state is None
    assert_same_state(ours, reloaded.state_dict())

    out = export_hf(reloaded, tmp_path / "export")
    assert not list(tmp_path.glob("export.tmp-*"))
    exported = load_exported(out)
    assert exported.config.tie_word_embeddings == tied
    assert exported.config.rope_scaling == hf_model.config.rope_scaling
    assert (exported.lm_head.weight.data_ptr() == exported.model.embed_tokens.weight.data_ptr()) == tied
    assert torch.equal(exported(ids).logits, expected)
    assert (out / "generation_config.json").is_file()


@torch.no_grad()
def test_mistral_style_model_loads_with_equal_logits(tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128,
                           sliding_window=None, initializer_range=0.2, rope_theta=1e6)
    mistral = MistralForCausalLM(config).eval()
    mistral.save_pretrained(tmp_path / "mistral")
    ids = token_batch(config.vocab_size)
    ours = load_model(tmp_path / "mistral")
    assert ours.config.num_key_value_heads == 2 and ours.config.rope_theta == 1e6
    assert max_diff(ours(ids), mistral(ids).logits) <= 1e-5


@torch.no_grad()
def test_export_replaces_an_earlier_export_and_casts_dtype(tmp_path):
    model = tiny_composer()
    export_hf(model.model, tmp_path / "out")
    bf16 = tiny_composer(seed=1).model.to(torch.bfloat16)
    export_hf(bf16, tmp_path / "out")
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype="auto")
    assert exported.dtype == torch.bfloat16
    assert torch.equal(exported.model.embed_tokens.weight, bf16.model.embed_tokens.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ---- SmolLM2 GGUF ---------------------------------------------------------------------------------
def smollm2_gguf() -> Path:
    from llmshearing.assets import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
@torch.no_grad()
def test_smollm2_gguf_matches_transformers_and_round_trips(tmp_path):
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    assert detect_format(gguf) == "gguf"
    hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.cat([torch.tensor([[1, 19556, 905, 28, 614, 253, 1345, 30, 2, 1, 330, 19556]]),
                     token_batch(hf_model.config.vocab_size, batch=2, length=12)])
    expected = hf_model(ids).logits
    del hf_model

    ours = load_model(gguf)
    assert ours.config.tie_word_embeddings
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    assert max_diff(ours(ids), expected) <= 1e-3

    checkpoint = save_composer_checkpoint(ours, tmp_path / "smollm2.pt")
    del ours
    reloaded, _ = load_composer_model(checkpoint)
    exported = load_exported(export_hf(reloaded, tmp_path / "export"))
    assert max_diff(exported(ids).logits, expected) <= 1e-3


# ---- composer-to-hf --prune -------------------------------------------------------------------------
@needs_l0
@torch.no_grad()
def test_cli_prune_matches_masked_model(tmp_path):
    model = tiny_composer()
    attach_random_l0(model, block_masks=True)
    ids = token_batch(model.config.vocab_size)
    expected = model.eval()({"input_ids": ids})  # eval: the L0 module's deterministic masks
    checkpoint = save_composer_checkpoint(model, tmp_path / "pruning.pt")

    result = run_cli_process("composer-to-hf", checkpoint, tmp_path / "pruned", "--prune")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "pruned")
    assert "no tokenizer" in result.stderr

    exported = load_exported(tmp_path / "pruned")
    assert max_diff(exported(ids).logits, expected) <= 1e-4
    for key, value in PRUNE_TARGET.to_dict().items():
        assert getattr(exported.config, key) == value, key
    assert PruningPlan.load(tmp_path / "pruned").target_shape() == PRUNE_TARGET


@needs_l0
@torch.no_grad()
def test_cli_without_prune_exports_full_model_and_mentions_masks(tmp_path, capsys):
    model = tiny_composer()
    attach_random_l0(model, block_masks=False)
    checkpoint = save_composer_checkpoint(model, tmp_path / "pruning.pt")
    code, out, _ = run_cli(capsys, "composer-to-hf", checkpoint, tmp_path / "full")
    assert code == 0
    assert "--prune" in out
    ids = token_batch(model.config.vocab_size)
    assert max_diff(load_exported(tmp_path / "full")(ids).logits, model.model(ids)) <= 1e-5


def as_json(values):
    return json.loads(json.dumps(values))


def plan_state(state: dict) -> dict:
    """The plan stored in a checkpoint's model state (the L0 module's extra state)."""
    from llmshearing.checkpoint_plan import PLAN_STATE_KEY

    return state["l0._extra_state"][PLAN_STATE_KEY]


def prune_export(capsys, state: dict, folder: Path):
    """Export ``state`` (a ComposerLlama state dict) with --prune; (the HF model, its pruning_plan.json)."""
    torch.save({"state": {"model": state}}, folder / "checkpoint.pt")
    code, _, err = run_cli(capsys, "composer-to-hf", folder / "checkpoint.pt", folder / "pruned", "--prune")
    assert code == 0, err
    return load_exported(folder / "pruned"), PruningPlan.load(folder / "pruned")


@needs_l0
@torch.no_grad()
def test_prune_slices_with_the_plan_the_checkpoint_carries(tmp_path, capsys):
    """Export reads the stored plan, not the masks: a checkpoint whose stored plan is another one
    exports that other plan, computing what the source masked by it computes."""
    model = tiny_composer()
    attach_random_l0(model, block_masks=True)
    state = model.state_dict()
    assert plan_state(state) == model.l0.make_plan().to_dict()
    other = tiny_composer()
    attach_random_l0(other, block_masks=True, seed=1)
    other_plan = other.l0.make_plan()
    assert other_plan.to_dict() != plan_state(state)
    state["l0._extra_state"] = {**state["l0._extra_state"], "pruning_plan": other_plan.to_dict()}

    exported, written = prune_export(capsys, state, tmp_path)
    assert as_json(written.to_dict()) == as_json(other_plan.to_dict())
    ids = token_batch(model.config.vocab_size)
    assert max_diff(exported(ids).logits, model.model(ids, other_plan.to_masks())) <= 1e-4


@needs_l0
@torch.no_grad()
def test_prune_of_a_checkpoint_written_before_plans_were_stored(tmp_path, capsys):
    """Old checkpoints hold the masks only: their plan is derived from the L0 state."""
    model = tiny_composer()
    attach_random_l0(model, block_masks=False)
    ids = token_batch(model.config.vocab_size)
    expected = model.eval()({"input_ids": ids})
    state = model.state_dict()
    state["l0._extra_state"] = {key: value for key, value in state["l0._extra_state"].items()
                                if key != "pruning_plan"}

    exported, written = prune_export(capsys, state, tmp_path)
    assert as_json(written.to_dict()) == as_json(model.l0.make_plan().to_dict())
    assert max_diff(exported(ids).logits, expected) <= 1e-4


# ---- Composer Trainer -------------------------------------------------------------------------------
@torch.no_grad()
def test_trainer_starts_from_our_checkpoint(tmp_path):
    source = tiny_composer(seed=0)
    checkpoint = save_composer_checkpoint(source, tmp_path / "init.pt")
    trainer = make_trainer(tiny_composer(seed=1), max_duration="1ba",
                           load_path=str(checkpoint), load_weights_only=True)
    assert_same_state(trainer.state.model, source.state_dict())


def test_trainer_refuses_checkpoint_of_another_shape(tmp_path):
    checkpoint = save_composer_checkpoint(tiny_composer(), tmp_path / "init.pt")
    other = tiny_composer(num_hidden_layers=2)
    with pytest.raises(CheckpointError, match="another shape"):
        make_trainer(other, max_duration="1ba", load_path=str(checkpoint), load_weights_only=True)


@needs_l0
def test_reads_trainer_written_checkpoint_and_prunes_it(tmp_path, capsys):
    model = tiny_composer()
    attach_random_l0(model, block_masks=False)
    model.train_metrics = {}  # training metrics are not under test here
    run = tmp_path / "run"
    trainer = make_trainer(model, max_duration="1ba", save_folder=str(run), save_interval="1ba")
    trainer.fit()
    latest = run / "latest-rank0.pt"
    assert latest.is_symlink()

    state = read_composer_checkpoint(latest)
    assert_same_state(model, state)
    assert any(key.startswith("l0.gates.") for key in state)
    assert plan_state(state) == model.l0.make_plan().to_dict()  # the plan of the masks at the step it was saved

    code, out, err = run_cli(capsys, "composer-to-hf", latest, tmp_path / "pruned", "--prune")
    assert code == 0, err
    assert "warning: the masks had not reached the target shape" in err  # one step of pruning
    assert out.strip().splitlines()[-1] == str(tmp_path / "pruned")
    assert load_exported(tmp_path / "pruned").config.num_hidden_layers == PRUNE_TARGET.num_hidden_layers


# ---- hf-to-composer CLI -----------------------------------------------------------------------------
def save_tiny_tokenizer(folder: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size - 1)} | {"<unk>": vocab_size - 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>").save_pretrained(folder)


@torch.no_grad()
def test_cli_hf_to_composer_and_back_with_tokenizer(tmp_path, capsys):
    from transformers import AutoTokenizer

    hf_model = save_tiny_hf(tmp_path / "hf", **HF_VARIANTS["gqa_untied"])
    save_tiny_tokenizer(tmp_path / "hf", hf_model.config.vocab_size)
    checkpoint = tmp_path / "ckpt" / "model.pt"
    code, out, err = run_cli(capsys, "hf-to-composer", tmp_path / "hf", checkpoint)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(checkpoint)
    assert (tmp_path / "ckpt" / "model.tokenizer").is_dir()
    model, _ = load_composer_model(checkpoint)
    ids = token_batch(hf_model.config.vocab_size)
    assert max_diff(model(ids), hf_model(ids).logits) <= 1e-5

    # composer-to-hf takes the checkpoint's own tokenizer folder
    code, out, err = run_cli(capsys, "composer-to-hf", checkpoint, tmp_path / "export")
    assert code == 0, err
    assert "no tokenizer" not in err
    assert AutoTokenizer.from_pretrained(tmp_path / "export")("w3 w5")["input_ids"] == [3, 5]
    assert torch.equal(load_exported(tmp_path / "export")(ids).logits, hf_model(ids).logits)


def test_two_models_converted_into_one_folder_keep_their_own_tokenizers(tmp_path, capsys):
    from transformers import AutoTokenizer

    for name, vocab in (("a", 97), ("b", 101)):
        save_tiny_hf(tmp_path / name, vocab_size=vocab)
        save_tiny_tokenizer(tmp_path / name, vocab)
        code, _, err = run_cli(capsys, "hf-to-composer", tmp_path / name, tmp_path / "ckpt" / f"{name}.pt")
        assert code == 0, err
    for name, vocab in (("a", 97), ("b", 101)):
        code, _, err = run_cli(capsys, "composer-to-hf", tmp_path / "ckpt" / f"{name}.pt", tmp_path / f"out_{name}")
        assert code == 0, err
        assert len(AutoTokenizer.from_pretrained(tmp_path / f"out_{name}")) == vocab


def test_cli_hf_to_composer_without_tokenizer_warns(tmp_path, capsys):
    save_tiny_hf(tmp_path / "hf")
    code, _, err = run_cli(capsys, "hf-to-composer", tmp_path / "hf", tmp_path / "model.pt")
    assert code == 0 and "no tokenizer" in err


# ---- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["hf-to-composer", "composer-to-hf"])
def test_cli_missing_source(tmp_path, capsys, command):
    missing = tmp_path / "nope.pt"
    code, _, err = run_cli(capsys, command, missing, tmp_path / "out")
    assert code == 2
    assert err.startswith("error:") and str(missing) in err and len(err.strip().splitlines()) == 1


def test_cli_random_bytes_source_is_one_line_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    result = run_cli_process("composer-to-hf", junk, tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(junk) in result.stderr and "corrupt" in result.stderr
    assert not (tmp_path / "out").exists()


def test_random_bytes_of_unknown_kind(tmp_path, capsys):
    junk = tmp_path / "weights.dat"
    junk.write_bytes(b"\x00\x01junk" * 100)
    code, _, err = run_cli(capsys, "hf-to-composer", junk, tmp_path / "x.pt")
    assert code == 2 and "unknown model format" in err


def test_truncated_checkpoint(tmp_path, capsys):
    checkpoint = save_composer_checkpoint(tiny_composer(), tmp_path / "full.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    code, _, err = run_cli(capsys, "composer-to-hf", truncated, tmp_path / "out")
    assert code == 2 and "corrupt or truncated" in err


def test_checkpoint_with_tensors_of_another_shape(tmp_path, capsys):
    model = tiny_composer()
    state = model.state_dict()
    state["_extra_state"] = {"model_config": tiny_config(intermediate_size=40).to_dict()}
    torch.save({"state": {"model": state}}, tmp_path / "mismatch.pt")
    code, _, err = run_cli(capsys, "composer-to-hf", tmp_path / "mismatch.pt", tmp_path / "out")
    assert code == 2
    assert "mlp" in err and "another shape" in err


def test_prune_without_l0_state(tmp_path, capsys):
    checkpoint = save_composer_checkpoint(tiny_composer(), tmp_path / "plain.pt")
    code, _, err = run_cli(capsys, "composer-to-hf", checkpoint, tmp_path / "out", "--prune")
    assert code == 2 and "no L0 module state" in err


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(CheckpointError, match="gpt2"):
        load_model(tmp_path / "gpt2")


def test_damaged_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x07" * 500)
    assert detect_format(bad) == "gguf"
    with pytest.raises(CheckpointError, match="cannot be read as a GGUF model"):
        load_model(bad)


def test_hf_directory_without_weights(tmp_path):
    save_tiny_hf(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path / "hf")


def test_truncated_safetensors(tmp_path):
    save_tiny_hf(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(tmp_path / "hf")


def test_conversion_summary_shows_the_range_of_per_layer_sizes():
    from llmshearing.convert.cli import _describe

    config = tiny_config(intermediate_sizes=[10, 20, 37], num_attention_heads_per_layer=[6, 4, 2],
                         num_key_value_heads_per_layer=[2, 2, 2])
    assert "2-6 heads / 2 KV heads, MLP 10-37" in _describe(config)
    assert _describe(config).endswith("(sizes differ per layer)")
    assert "6 heads / 2 KV heads, MLP 37," in _describe(tiny_config())
