"""Every pruning method on every model family, with transformers as the oracle: each family's tiny
random model (built with transformers' own config class, the sample corpus's vocabulary) goes
through Sheared L0 pruning (train.py + composer-to-hf --prune), Minitron (--target, --search) and
LLM Surgeon (structured per-layer / uniform, 2:4, unstructured); every export must load as what
that family's users load (Qwen3ForCausalLM, ...; per-layer sizes with trust_remote_code) and compute
what our sliced model computes. Evaluation runs on the exports (lm-eval on one non-LLaMA export)."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import transformers
import yaml

from llmshearing.convert import load_model
from llmshearing.model.families import FAMILIES as SUPPORTED
from llmshearing.plan import PruningPlan
from llmshearing.shape import TargetShape, config_parameters
from llmshearing.slicing import slice_model
from llmshearing.surgeon.kfac import PROJECTIONS
from llmshearing.surgeon.semi_structured import two_zeros_in_every_four

REPO = Path(__file__).resolve().parents[1]
VOCAB = 49152  # the sample corpus's (SmolLM2) vocabulary
COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=4, num_attention_heads=6,
              num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
# windows far shorter than the calibration / eval sequences, so sliding layers really slide
FAMILIES = {
    "llama_attention_bias": lambda: transformers.LlamaConfig(**COMMON, attention_bias=True),
    "mistral_sliding_window_head_dim": lambda: transformers.MistralConfig(**COMMON, sliding_window=8, head_dim=12),
    "qwen2_biases_tied_sliding_layers": lambda: transformers.Qwen2Config(
        **{**COMMON, "tie_word_embeddings": True}, use_sliding_window=True, sliding_window=8, max_window_layers=2),
    "qwen3_qk_norm_head_dim_sliding_layers": lambda: transformers.Qwen3Config(
        **COMMON, head_dim=16, use_sliding_window=True, sliding_window=8, max_window_layers=2),
}
CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
           "qwen3": "Qwen3ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"}
if "gemma3_text" in SUPPORTED:  # GELU-tanh, 1 + w norms, sandwich norms, scaled embeddings, local RoPE base
    FAMILIES["gemma3_text_sandwich_norms_local_rope"] = lambda: transformers.Gemma3TextConfig(
        **{**COMMON, "tie_word_embeddings": True}, head_dim=16, sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
TARGET = dict(hidden_size=32, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=3, intermediate_size=40)
TARGET_WORDS = ",".join(f"{k}={v}" for k, v in TARGET.items())
FAST = ("--calib-samples", "10", "--seq-len", "32", "--batch-size", "5")
TOKENS = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class Source:
    name: str
    folder: Path
    hf_config: transformers.PretrainedConfig
    model: torch.nn.Module  # ours, loaded from ``folder``

    @property
    def family_class(self) -> str:
        return CLASSES[self.hf_config.model_type]


def save_tokenizer_with_eos(folder: Path) -> None:
    """A word-level tokenizer over the corpus vocabulary whose id 0 is the corpus's EOS (lm-eval needs one)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0} | {f"w{i}": i for i in range(1, VOCAB - 1)} | {"<unk>": VOCAB - 1}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>",
                                         eos_token="<|endoftext|>").save_pretrained(folder)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def source(request, tmp_path_factory) -> Source:
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(FAMILIES[request.param]()).eval()
    with torch.no_grad():  # non-zero biases and norms, and weights large enough that mistakes show
        for parameter in hf.parameters():
            parameter.add_(torch.randn_like(parameter) * (0.3 if parameter.dim() == 1 else 0.08))
    folder = tmp_path_factory.mktemp(request.param) / "hf"
    hf.save_pretrained(folder)
    save_tokenizer_with_eos(folder)
    return Source(request.param, folder, hf.config, load_model(folder).eval())


# ---- shared checks --------------------------------------------------------------------------------
def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def load_export(out: Path, source: Source, *, per_layer: bool = False, kept_layers=None):
    """The export loaded by transformers, checked to be the family's class with the family's fields."""
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=per_layer).eval()
    config = json.loads((out / "config.json").read_text())
    expected = source.family_class.removesuffix("ForCausalLM") + "ForCausalLMWithLayerSizes" if per_layer \
        else source.family_class
    assert type(hf).__name__ == expected
    assert config["model_type"] == source.hf_config.model_type and ("auto_map" in config) == per_layer
    for key in ("attention_bias", "rope_theta", "tie_word_embeddings", "rms_norm_eps", "hidden_act",
                "hidden_activation", "query_pre_attn_scalar", "rope_local_base_freq"):
        assert getattr(hf.config, key, None) == getattr(source.hf_config, key, None), key
    assert head_dim(hf.config) == head_dim(source.hf_config)
    kept = list(range(source.hf_config.num_hidden_layers)) if kept_layers is None else kept_layers
    assert len(hf.model.layers) == len(kept)
    ours = source.model.config
    windows = [ours.window_of(i) for i in kept]
    assert [load_model(out).config.window_of(i) for i in range(len(kept))] == windows
    if getattr(source.hf_config, "layer_types", None) and any(windows):
        assert hf.config.layer_types == [source.hf_config.layer_types[i] for i in kept]
    if any(windows):
        assert hf.config.sliding_window == source.hf_config.sliding_window == 8
    return hf


@torch.no_grad()
def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@torch.no_grad()
def source_with_replacements(source: Source, plan: PruningPlan):
    """Our source model (fresh) with the plan's replacement weights (LLM Surgeon's updated weights)."""
    model = load_model(source.folder).eval()
    params = dict(model.named_parameters())
    for name, tensor in (plan.replacement_weights or {}).items():
        params[name].copy_(tensor)
    return model


@torch.no_grad()
def check_plan_export(hf, source: Source, plan: PruningPlan) -> None:
    """The export computes our slice of the source (with the plan's replacement weights) and the
    source under the plan's masks; q/k/v/o biases and q/k norms went with their heads."""
    updated = source_with_replacements(source, plan)
    sliced = slice_model(updated, plan)
    expected = hf(TOKENS).logits
    assert expected.abs().max() > 0.5
    assert max_diff(expected, sliced(TOKENS)) <= 1e-4
    assert max_diff(expected, updated(TOKENS, plan.to_masks())) <= 1e-4
    assert hf.num_parameters() == sliced.num_parameters() == config_parameters(sliced.config)
    hd = source.model.config.head_dim
    for new, layer_plan in enumerate(plan.layers):
        src = source.model.model.layers[layer_plan.source_index].self_attn
        dst = hf.model.layers[new].self_attn
        for name, kept in (("q_proj", layer_plan.kept_heads), ("k_proj", layer_plan.kept_kv_heads),
                           ("v_proj", layer_plan.kept_kv_heads)):
            bias = getattr(src, name).bias
            if bias is None:
                assert getattr(dst, name).bias is None
                continue
            rows = torch.tensor([h * hd + i for h in kept for i in range(hd)])
            assert torch.equal(getattr(dst, name).bias, bias[rows]), (new, name)
        for name in ("q_norm", "k_norm"):
            if hasattr(src, name):
                assert torch.equal(getattr(dst, name).weight, getattr(src, name).weight)


def prune(*args) -> None:
    from llmshearing.prune.cli import main

    assert main([str(a) for a in args]) == 0


# ---- Sheared L0 pruning -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sheared_run(source, sample_corpus, tmp_path_factory):
    """A short L0 pruning run of the source (train.py's main, in this process: a fresh interpreter's
    start-up was most of its time; tiny_prune.yaml's settings) and its --prune export."""
    from llmshearing.cli.train import main as train_main

    folder = tmp_path_factory.mktemp(f"sheared_{source.name}")
    settings = yaml.safe_load((REPO / "yamls" / "tiny_prune.yaml").read_text())
    settings["model"] = {"path": str(source.folder)}
    (folder / "prune.yaml").write_text(yaml.safe_dump(settings))
    assert train_main([str(folder / "prune.yaml"), f"data.path={sample_corpus}", f"save_folder={folder / 'run'}",
                       "max_duration=6ba", "save_interval=6ba", "eval_interval=6ba", "console_log_interval=6ba",
                       "mask_plot=false"]) == 0
    checkpoint = folder / "run" / "latest-rank0.pt"
    from llmshearing.convert.cli import main

    assert main(["composer-to-hf", str(checkpoint), str(folder / "hf"), "--prune"]) == 0
    return checkpoint, folder / "hf"


@pytest.mark.slow
@torch.no_grad()
def test_sheared_pruning_exports_the_familys_class(source, sheared_run):
    from llmshearing.convert import load_composer_model
    from llmshearing.sheared.l0_state import rebuild_l0_module

    checkpoint, out = sheared_run
    model, l0_state = load_composer_model(checkpoint)
    assert model.config.to_dict() == {**source.model.config.to_dict(), "attn_impl": model.config.attn_impl}
    l0 = rebuild_l0_module(model.config, l0_state)
    plan = l0.make_plan()
    assert plan.target_shape() == TargetShape(**TARGET)
    assert PruningPlan.load(out).to_dict() == plan.to_dict()
    hf = load_export(out, source, kept_layers=[layer.source_index for layer in plan.layers])
    assert {k: getattr(hf.config, k) for k in TARGET} == TARGET
    sliced = slice_model(model.eval(), plan)
    expected = hf(TOKENS).logits
    assert expected.abs().max() > 0.5
    assert max_diff(expected, sliced(TOKENS)) <= 1e-4
    assert max_diff(expected, model.eval()(TOKENS, l0.eval()())) <= 1e-4  # the masked model
    assert hf.num_parameters() == sliced.num_parameters() == config_parameters(sliced.config)


@torch.no_grad()
def test_sheared_expected_parameters_count_biases_and_qk_norms(source):
    """With every gate decided (keep probability 0 or 1), L0's differentiable parameter count is the
    sliced model's exactly: q/k/v and o biases, q/k norms, tied embeddings included."""
    from llmshearing.sheared.l0_module import L0Module

    l0 = L0Module(source.model.config, TargetShape(**TARGET), seed=1)
    generator = torch.Generator().manual_seed(2)
    for gate in l0.gates.values():
        gate.log_alpha.copy_(torch.randn(gate.log_alpha.shape, generator=generator))
    keep = l0.selection()
    decided = {"layer": keep.layer_keep, "kv_group": keep.kv_keep, "intermediate": keep.neuron_keep,
               "hidden": keep.hidden_keep,
               "head": keep.head_keep | ~l0.expand_groups(keep.kv_keep)}  # a dropped group's heads: any
    for name, gate in l0.gates.items():
        gate.log_alpha.copy_(torch.where(decided[name], 100.0, -100.0))
    sliced = slice_model(source.model, l0.make_plan())
    assert float(l0.expected_parameters()) == sliced.num_parameters() == config_parameters(sliced.config)
    flags = source.model.config.parameter_flags
    assert any(flags.values()) == (source.hf_config.model_type != "mistral")


def test_l0_masks_of_another_family_are_refused(source):
    """The checkpoint's L0 state names its source config; family fields count (not just the sizes)."""
    import dataclasses

    from llmshearing.errors import CheckpointError
    from llmshearing.sheared.l0_module import L0Module

    config = source.model.config
    l0 = L0Module(config, TargetShape(**TARGET))
    other = dataclasses.replace(config, qkv_bias=not config.qkv_bias, o_bias=False, qk_norm=False,
                                model_type="qwen2" if not config.qkv_bias else "llama",
                                layer_types=None, sliding_window=None)
    with pytest.raises(CheckpointError, match="another source model config"):
        L0Module(other, TargetShape(**TARGET)).load_state_dict(l0.state_dict())
    L0Module(dataclasses.replace(config, attn_impl="eager"), TargetShape(**TARGET)).load_state_dict(l0.state_dict())
    # a checkpoint written before the family fields existed holds a plain LLaMA, and still loads as one
    family_fields = {f.name: f.default for f in dataclasses.fields(config)
                     if not f.metadata.get("hf", True) and f.name != "attn_impl"}
    plain = dataclasses.replace(config, **family_fields)
    state = L0Module(plain, TargetShape(**TARGET)).state_dict()
    extra = state["_extra_state"]
    state["_extra_state"] = {**extra, "source_config": {k: v for k, v in extra["source_config"].items()
                                                        if k not in family_fields}}
    L0Module(plain, TargetShape(**TARGET)).load_state_dict(state)
    with pytest.raises(CheckpointError, match="another source model config"):
        L0Module(config, TargetShape(**TARGET)).load_state_dict(state)


# ---- Minitron --------------------------------------------------------------------------------------
def test_minitron_target_exports_the_familys_class(source, sample_corpus, tmp_path):
    out = tmp_path / "minitron"
    prune("minitron", "--model", source.folder, "--data", sample_corpus, "--out", out, "--target", TARGET_WORDS,
          *FAST)
    plan = PruningPlan.load(out)
    assert plan.method == "minitron" and plan.target_shape() == TargetShape(**TARGET)
    hf = load_export(out, source, kept_layers=[layer.source_index for layer in plan.layers])
    assert {k: getattr(hf.config, k) for k in TARGET} == TARGET
    check_plan_export(hf, source, plan)
    assert transformers.AutoTokenizer.from_pretrained(out).eos_token_id == 0


def test_minitron_channel_importance_hooks_every_hidden_size_norm(source):
    """Embedding-channel importance reads every norm on the residual stream: two per pre-norm layer,
    four per layer with sandwich norms (Gemma); never the q/k norms over head_dim."""
    from llmshearing.minitron.activations import ActivationRecorder, record_activations
    from llmshearing.model.llama import RMSNorm

    model = source.model
    expected = {f"{i}.{name.removesuffix('_layernorm')}" for i, layer in enumerate(model.model.layers)
                for name, module in layer.named_children() if isinstance(module, RMSNorm)} | {"final"}
    with ActivationRecorder(model, range(4), "mean", "l2") as recorder:
        assert set(recorder.norms) == expected
    assert len(expected) == 1 + 4 * (4 if model.config.sandwich_norms else 2)
    scores = record_activations(model, [TOKENS])
    assert scores.hidden.shape == (48,) and bool((scores.hidden > 0).all())


def test_minitron_search_exports_the_best_candidate_as_the_familys_class(source, sample_corpus, tmp_path):
    out = tmp_path / "searched"
    budget = int(0.75 * config_parameters(source.model.config))
    prune("minitron", "--model", source.folder, "--data", sample_corpus, "--out", out, "--search",
          "--param-budget", budget, "--max-candidates", "2", "--eval-batches", "1", *FAST)
    with open(out / "search.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["rank"]) for row in rows] == [1, 2]
    assert all(0.95 * budget <= int(row["parameters"]) <= budget for row in rows)
    plan = PruningPlan.load(out)
    hf = load_export(out, source, kept_layers=[layer.source_index for layer in plan.layers])
    best = {k: int(rows[0][k]) for k in TargetShape.of(source.model.config).to_dict()}
    assert {k: getattr(hf.config, k) for k in best} == best
    assert hf.num_parameters() == int(rows[0]["parameters"])  # the search's count is the export's
    check_plan_export(hf, source, plan)


# ---- LLM Surgeon ------------------------------------------------------------------------------------
SURGEON_RUNS = {
    "per_layer": ("--mode", "structured", "--density", "0.5", "--shots", "2"),
    # whole KV groups: k/v rows (and their biases) go too
    "target": ("--mode", "structured", "--target", "num_attention_heads=3,num_key_value_heads=1,intermediate_size=40",
               "--attention-unit", "kv-group"),
    "2:4": ("--mode", "2:4"),
    "unstructured": ("--mode", "unstructured", "--density", "0.5"),
}


@pytest.fixture(scope="module")
def surgeon_runs(source, sample_corpus, tmp_path_factory):
    """Every LLM Surgeon mode on the source, from the command line: {run: exported folder}."""
    folder = tmp_path_factory.mktemp(f"surgeon_{source.name}")
    outs = {}
    for run, options in SURGEON_RUNS.items():
        outs[run] = folder / run.replace(":", "_")
        prune("surgeon", "--model", source.folder, "--data", sample_corpus, "--out", outs[run], *options, *FAST)
    return outs


def report(out: Path) -> dict:
    return json.loads((out / "surgeon_report.json").read_text())


@torch.no_grad()
def test_surgeon_structured_per_layer_loads_with_remote_code_and_generates(source, surgeon_runs):
    out = surgeon_runs["per_layer"]
    plan = PruningPlan.load(out)
    hf = load_export(out, source, per_layer=True)
    sizes = [len(layer.kept_neurons) for layer in plan.layers]
    heads = [len(layer.kept_heads) for layer in plan.layers]
    assert len(set(sizes)) > 1 and sum(heads) < 4 * source.hf_config.num_attention_heads  # heads went too
    assert [layer.mlp.up_proj.weight.shape[0] for layer in hf.model.layers] == sizes
    assert [layer.self_attn.q_proj.weight.shape[0] // head_dim(hf.config) for layer in hf.model.layers] == heads
    assert abs(report(out)["density"] - 0.5) < 0.03
    check_plan_export(hf, source, plan)
    assert report(out)["parameters"]["result"] == hf.num_parameters()
    generated = hf.generate(TOKENS[:1, :10], max_new_tokens=8, do_sample=False, pad_token_id=0)
    no_cache = hf.generate(TOKENS[:1, :10], max_new_tokens=8, do_sample=False, pad_token_id=0, use_cache=False)
    assert generated.shape == (1, 18) and torch.equal(generated, no_cache)


@torch.no_grad()
def test_surgeon_structured_target_exports_the_familys_class(source, surgeon_runs):
    out = surgeon_runs["target"]
    plan = PruningPlan.load(out)
    hf = load_export(out, source)
    assert (hf.config.num_attention_heads, hf.config.num_key_value_heads, hf.config.intermediate_size,
            hf.config.hidden_size, hf.config.num_hidden_layers) == (3, 1, 40, 48, 4)
    assert set(plan.replacement_weights) == {f"model.layers.{i}.{name}.weight" for i in range(4)
                                             for name in ("self_attn.o_proj", "mlp.down_proj")}
    check_plan_export(hf, source, plan)
    hd = head_dim(source.hf_config)
    for layer, src, layer_plan in zip(hf.model.layers, source.model.model.layers, plan.layers):
        kept = torch.tensor([h * hd + i for h in layer_plan.kept_heads for i in range(hd)])
        # the correlated update moved the kept o_proj columns, and never o_proj's bias
        assert max_diff(layer.self_attn.o_proj.weight, src.self_attn.o_proj.weight[:, kept]) > 1e-3
        if src.self_attn.o_proj.bias is not None:
            assert torch.equal(layer.self_attn.o_proj.bias, src.self_attn.o_proj.bias)


def test_surgeon_moves_only_projection_weights_and_removed_rows_biases_change_nothing(source, sample_corpus):
    """In place, over two shots with fine-tuning between them: curvature updates and fine-tuning move
    projection weights only (biases, q/k norms, embeddings stay the source's), and the pruned model,
    whose removed q/k/v rows are zero but keep their biases, computes what its slice computes."""
    from llmshearing.data.calibration import calibration_batches
    from llmshearing.surgeon.export import pruned_model
    from llmshearing.surgeon.settings import SurgeonSettings
    from llmshearing.surgeon.shots import run_surgeon

    model = load_model(source.folder).eval()
    batches = calibration_batches(sample_corpus, 10, 32, 5)
    settings = SurgeonSettings(mode="structured", shots=2, attention_unit="kv-group", finetune_steps=2, finetune_lr=1e-2,
                               target=dict(num_attention_heads=3, num_key_value_heads=1, intermediate_size=24),
                               progress=False).validate()
    run = run_surgeon(model, batches, settings, say=lambda message: None)
    plan, sliced = pruned_model(model, run, settings)
    assert [len(layer.kept_kv_heads) for layer in plan.layers] == [1] * 4  # whole KV groups went
    ours = dict(source.model.named_parameters())
    moved = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, ours[name])}
    projections = {f"model.layers.{i}.{name}.weight" for i in range(4) for name in PROJECTIONS}
    assert moved <= projections and len(moved) > len(projections) // 2
    with torch.no_grad():
        assert max_diff(model(TOKENS), sliced(TOKENS)) <= 1e-4
        assert max_diff(model(TOKENS), model(TOKENS, plan.to_masks())) <= 1e-4


def projection_weights(model):
    return [layer.get_submodule(name).weight for layer in model.model.layers for name in PROJECTIONS]


@pytest.mark.parametrize("run", ["2:4", "unstructured"])
@torch.no_grad()
def test_surgeon_sparse_modes_keep_the_family_and_the_pattern(source, surgeon_runs, run):
    out = surgeon_runs[run]
    hf = load_export(out, source)
    weights = projection_weights(hf)
    total = sum(w.numel() for w in weights)
    assert sum(int((w == 0).sum()) for w in weights) == total // 2
    assert report(out)["density"] == pytest.approx(0.5, abs=1e-12)
    if run == "2:4":
        assert all(two_zeros_in_every_four(w) for w in weights)
    # only projection weights are pruned: biases, norms and embeddings are the source's
    ours = dict(source.model.named_parameters())
    for name, parameter in hf.named_parameters():
        if not (name.endswith(".weight") and any(f".{p}." in name for p in ATTENTION + ("gate_proj", "up_proj", "down_proj"))):
            assert torch.equal(parameter, ours[name]), name
    assert max_diff(hf(TOKENS).logits, load_model(out).eval()(TOKENS)) <= 1e-4


# ---- evaluation ---------------------------------------------------------------------------------------
@torch.no_grad()
def test_eval_reports_every_domain_of_a_per_layer_export(source, surgeon_runs, sample_corpus, tmp_path):
    import torch.nn.functional as F

    from llmshearing.eval.cli import main
    from llmshearing.eval.perplexity import split_loaders

    out = surgeon_runs["per_layer"]
    results = tmp_path / "eval.json"
    assert main([str(out), "--data", str(sample_corpus), "--out", str(results), "--max-tokens", "256"]) == 0
    scores = json.loads(results.read_text())
    domains = json.loads((sample_corpus / "manifest.json").read_text())["domains"]
    assert list(scores["domains"]) == domains and scores["total_tokens"] == len(domains) * 2 * 127
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert scores["parameters"] == hf.num_parameters()
    loaders = split_loaders(sample_corpus, domains, split="eval", batch_size=8, seq_len=128, max_samples=2)
    for domain, loader in loaders.items():  # transformers' logits, sliding windows included, give the same loss
        [batch] = list(loader)
        ids = batch["input_ids"]
        logits = hf(ids).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)).item()
        assert abs(loss - scores["domains"][domain]["loss"]) <= 1e-4, domain


@pytest.mark.slow
def test_lm_eval_runs_a_qwen3_export_offline(sample_corpus, tmp_path_factory, tmp_path):
    """lm-evaluation-harness's own hf model class on a Qwen3 Minitron export (no remote code)."""
    pytest.importorskip("lm_eval")
    from tests.test_lm_eval import run_lm_eval

    name = "qwen3_qk_norm_head_dim_sliding_layers"
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(FAMILIES[name]())
    folder = tmp_path / "qwen3"
    hf.save_pretrained(folder)
    save_tokenizer_with_eos(folder)
    out = tmp_path / "minitron"
    prune("minitron", "--model", folder, "--data", sample_corpus, "--out", out, "--target", TARGET_WORDS, *FAST)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen3ForCausalLM"]
    scores = run_lm_eval(out, tmp_path, limit=8)
    assert 0.0 <= scores["acc,none"] <= 1.0 and scores["perplexity,none"] > 1000  # random weights
