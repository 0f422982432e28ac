"""LLM Surgeon on tiny models: K-FAC estimation, selection, slicing, export, CLI and bad input."""
import json

import pytest
import torch
import torch.nn.functional as F

from llmshearing.convert import export_hf, load_model
from llmshearing.errors import ShapeError
from llmshearing.model import LlamaConfig
from llmshearing.plan import PruningPlan
from llmshearing.prune.cli import main
from llmshearing.slicing import slice_model
from llmshearing.surgeon.export import pruned_model
from llmshearing.surgeon.kfac import PROJECTIONS, SHARED_INPUT, estimate_factors
from llmshearing.surgeon.memory import FactorBudget, factor_bytes_per_layer
from llmshearing.surgeon.report import REPORT_FILE
from llmshearing.surgeon.semi_structured import to_semi_structured, two_zeros_in_every_four
from llmshearing.surgeon.settings import SurgeonSettings
from llmshearing.surgeon.shots import run_surgeon
from llmshearing.surgeon.target import target_counts
from tests.helpers import tiny_model

SHAPE = dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2, head_dim=8)
TOKENS = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(1))


def batches(count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 97, (4, 16), generator=generator) for _ in range(count)]


def pruned(mode, density=None, **settings):
    model = tiny_model(**{**SHAPE, **settings.pop("shape", {})})
    config = SurgeonSettings(mode=mode, density=density, progress=False, **settings)
    run = run_surgeon(model, batches(), config, say=lambda message: None)
    return model, run, config


def projection_weights(model):
    return [layer.get_submodule(name).weight for layer in model.model.layers for name in PROJECTIONS]


# ---- K-FAC factors --------------------------------------------------------------------------------
def direct_factors(model, data, index, name):
    """A and G of one projection by plain autograd: inputs and retained output gradients."""
    inputs, outputs = [], []
    module = model.model.layers[index].get_submodule(name)

    def keep(module, args, out):
        inputs.append(args[0])
        outputs.append(out)
        out.retain_grad()

    handle = module.register_forward_hook(keep)
    tokens = 0
    for batch in data:
        logits = model(batch)[:, :-1]
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum").backward()
        tokens += batch.numel()
    handle.remove()
    model.zero_grad(set_to_none=True)
    a = torch.cat([x.reshape(-1, x.shape[-1]) for x in inputs])
    g = torch.cat([y.grad.reshape(-1, y.shape[-1]) for y in outputs])
    return a.t() @ a / tokens, g.t() @ g / tokens


def test_kfac_factors_equal_the_direct_computation_whatever_the_block():
    model, data = tiny_model(**SHAPE), batches()
    alone = estimate_factors(model, data, [1])[1]
    together = estimate_factors(model, data, [0, 1, 2])[1]
    for name in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
        A, G = direct_factors(model, data, 1, name)
        owner = SHARED_INPUT.get(name, name)
        for factors in (alone, together):
            assert torch.allclose(factors.A[owner], A, rtol=1e-4, atol=1e-6)
            assert torch.allclose(factors.G[name], G, rtol=1e-4, atol=1e-7)
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_micro_batches_leave_the_factors_as_whole_batches_give_them():
    model, data = tiny_model(**SHAPE), batches()
    whole = estimate_factors(model, data, [0, 2], micro_batch_tokens=10_000)
    split = estimate_factors(model, data, [0, 2], micro_batch_tokens=16)  # one sequence of 16 tokens at a time
    for index in (0, 2):
        for name in PROJECTIONS:
            if name not in SHARED_INPUT:
                assert torch.allclose(split[index].A[name], whole[index].A[name], rtol=1e-4, atol=1e-6)
            assert torch.allclose(split[index].G[name], whole[index].G[name], rtol=1e-4, atol=1e-7)


def test_the_chunked_loss_is_the_full_logits_cross_entropy():
    from llmshearing.surgeon.kfac import summed_next_token_loss

    model, (batch,) = tiny_model(**SHAPE), batches(1)
    logits = model(batch)[:, :-1]
    full = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
    assert torch.allclose(summed_next_token_loss(model, batch, chunk_tokens=7), full, rtol=1e-5)


def test_curvatures_made_layer_by_layer_equal_the_eager_ones():
    from llmshearing.surgeon.kfac import BlockCurvatures

    model, data = tiny_model(**SHAPE), batches()
    factors = estimate_factors(model, data, [0, 1, 2])
    eager = {index: factors[index].curvatures(0.01) for index in factors}
    lazy = BlockCurvatures(factors, 0.01)
    assert sorted(lazy) == [0, 1, 2] and len(lazy) == 3
    for index in (1, 0, 2):
        made = lazy.pop(index)
        for name in PROJECTIONS:
            for field in ("A", "A_inv", "G", "G_inv"):
                assert torch.equal(getattr(made[name], field), getattr(eager[index][name], field))
    assert len(lazy) == 0 and not lazy._raw and not lazy._made  # nothing of a popped layer stays


def test_activation_estimate_is_what_the_curvature_pass_keeps_for_backward():
    from llmshearing.surgeon.kfac import summed_next_token_loss
    from llmshearing.surgeon.grads import trainable_only
    from llmshearing.surgeon.memory import saved_bytes_per_token

    model = tiny_model(**SHAPE)
    batch = batches(1)[0]
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in weights:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    from llmshearing.surgeon.kfac import _backward_starts_at

    start = _backward_starts_at(model.model.layers[0])  # as the curvature pass of a block from layer 0
    with trainable_only(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        summed_next_token_loss(model, batch)
    start.remove()
    per_layer, once = saved_bytes_per_token(model.config, batch.shape[1])
    estimate = (per_layer * model.config.num_hidden_layers + once) * batch.numel()
    measured = sum(storages.values())
    assert 0.9 * measured <= estimate <= 1.25 * measured


def test_peak_estimate_counts_what_each_allocation_holds():
    from llmshearing.surgeon.memory import peak_estimate, prunable_weights

    config = tiny_model(**SHAPE).config
    kwargs = dict(start=1000, layers_per_block=3, seq_len=16, micro_batch_tokens=32, loss_chunk_tokens=8)
    per_layer = factor_bytes_per_layer(config)
    matrix = peak_estimate(config, mode="unstructured", global_selection=False, **kwargs)
    paper = peak_estimate(config, mode="unstructured", global_selection=True, **kwargs)
    assert matrix.factors == per_layer // 2 * 3 + per_layer and matrix.selection == 0
    assert paper.factors == per_layer * 3 + per_layer // 2 and paper.selection == 10 * prunable_weights(config)
    assert matrix.head == 3 * 4 * 8 * config.vocab_size and matrix.total > 1000
    assert "peak memory estimate" in matrix.describe()
    from llmshearing.surgeon.memory import sequential_estimate

    alone = sequential_estimate(config, start=1000, seq_len=16, micro_batch_tokens=32, calibration_tokens=640)
    assert alone.activations >= 2 * 4 * 640 * config.hidden_size and alone.selection == 0
    scaled = sequential_estimate(config, start=1000, seq_len=16, micro_batch_tokens=32, calibration_tokens=640,
                                 row_scaled=True, loss_chunk_tokens=8)
    assert scaled.total >= alone.total
    magnitude = peak_estimate(config, mode="2:4", global_selection=False, curvature=False, **kwargs)
    assert magnitude.factors == magnitude.activations == magnitude.head == 0


def test_sequential_input_factors_are_the_kfac_ones_of_an_unpruned_model():
    from llmshearing.surgeon.kfac import sequential_input_factors

    model, data = tiny_model(**SHAPE), batches()
    kfac = estimate_factors(model, data, [0, 1, 2])
    seen = {}
    sequential_input_factors(model, data, lambda index, inputs: seen.setdefault(index, inputs), micro_batch_tokens=16)
    assert sorted(seen) == [0, 1, 2]
    for index, inputs in seen.items():
        assert sorted(inputs) == sorted(kfac[index].A)
        for name, a in inputs.items():
            assert torch.allclose(a, kfac[index].A[name], rtol=1e-4, atol=1e-6)


def test_sequential_curvature_sees_the_pruned_layers_before_it():
    from llmshearing.surgeon.kfac import sequential_input_factors

    model, data = tiny_model(**SHAPE), batches()
    dense = estimate_factors(model, data, [0, 1, 2])
    seen = {}

    def zero_attention_output(index, inputs):
        seen[index] = inputs
        model.model.layers[index].self_attn.o_proj.weight.data.zero_()

    sequential_input_factors(model, data, zero_attention_output)
    assert torch.allclose(seen[0]["self_attn.q_proj"], dense[0].A["self_attn.q_proj"], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(seen[1]["self_attn.q_proj"], dense[1].A["self_attn.q_proj"], rtol=1e-2)


@pytest.mark.parametrize("mode,density,row_scaled", [("unstructured", 0.4, False), ("2:4", None, True)])
def test_sequential_curvature_prunes_every_matrix_to_the_density(mode, density, row_scaled):
    model, run, settings = pruned(mode, density, curvature="sequential", shots=2, row_scaled=row_scaled)
    for weight in projection_weights(model):
        assert int((weight == 0).sum()) == round((1 - settings.density) * weight.numel())
    assert "peak memory estimate" in run.memory_estimate and run.factor_memory == ""


def test_output_scales_are_the_kfac_inverse_diagonals():
    from llmshearing.surgeon.kfac import output_scales

    model, data = tiny_model(**SHAPE), batches()
    scales = output_scales(model, data, 0.01)
    curvatures = estimate_factors(model, data, [1])[1].curvatures(0.01)
    for name in PROJECTIONS:
        assert torch.allclose(scales[1][name], 1.0 / curvatures[name].G_inv.diagonal(), rtol=1e-4)


def test_sequential_curvature_is_for_sparse_modes_with_matrix_allocation():
    from llmshearing.errors import ConfigError

    for settings in (dict(mode="structured", density=0.5), dict(mode="2:4", allocation="global")):
        with pytest.raises(ConfigError, match="--curvature sequential"):
            SurgeonSettings(curvature="sequential", **settings).validate()


def test_factor_memory_estimate_counts_every_factor_and_its_inverse():
    model = tiny_model(**SHAPE)
    factors = estimate_factors(model, batches(1), [0])[0]
    elements = sum(t.numel() for t in [*factors.A.values(), *factors.G.values()])
    assert factor_bytes_per_layer(model.config) == 2 * 4 * elements


def test_layers_are_split_into_blocks_that_fit_the_budget():
    budget = FactorBudget(per_layer=10, layers=5, budget=25, available=100)
    assert budget.blocks(list(range(5))) == [[0, 1], [2, 3], [4]]
    assert "3 curvature pass" in budget.describe() and budget.warning() is None
    assert "out-of-memory" in FactorBudget(per_layer=10, layers=5, budget=25, available=5).warning()


# ---- structured -----------------------------------------------------------------------------------
@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("unit,shape", [("head", {}), ("kv-group", {}), ("head", dict(num_key_value_heads=6))])
def test_structured_slicing_equals_masking(unit, shape, uniform):
    model, run, settings = pruned("structured", 0.6, uniform=uniform, attention_unit=unit, shots=2, shape=shape)
    plan, sliced = pruned_model(model, run, settings)
    assert sliced.num_parameters() < model.num_parameters()
    assert sliced.config.is_uniform == uniform  # the learned allocation differs per layer on these weights
    masked = model(TOKENS)  # removed rows/columns hold zeros in the source-shaped model
    assert (masked - sliced(TOKENS)).abs().max().item() <= 1e-4
    assert (model(TOKENS, plan.to_masks()) - masked).abs().max().item() <= 1e-4
    assert abs(run.shots[-1].density - 0.6) < 0.1
    assert [shot.density for shot in run.shots] == sorted((shot.density for shot in run.shots), reverse=True)


def test_per_layer_sizes_follow_the_global_threshold_and_keep_every_layer_alive():
    model, run, settings = pruned("structured", 0.5, shots=3)
    plan, sliced = pruned_model(model, run, settings)
    config = sliced.config
    assert len(set(config.intermediate_sizes)) > 1 and min(config.intermediate_sizes) >= 1
    assert min(config.num_attention_heads_per_layer or [config.num_attention_heads]) >= config.num_key_value_heads
    assert abs(run.shots[-1].density - 0.5) < 0.02  # neurons are chosen globally to meet the density
    removed = [run.pruner.removed["neuron"][i] for i in range(3)]
    assert all(len(r) == SHAPE["intermediate_size"] - size for r, size in zip(removed, config.intermediate_sizes))


def test_the_plan_with_replacement_weights_reslices_the_source(tmp_path):
    source = tiny_model(**SHAPE)
    model, run, settings = pruned("structured", 0.7, uniform=True)
    plan, sliced = pruned_model(model, run, settings)
    loaded = PruningPlan.load(plan.save(tmp_path))
    assert set(loaded.replacement_weights) == set(plan.replacement_weights)
    assert torch.allclose(slice_model(source, loaded)(TOKENS), sliced(TOKENS), atol=1e-5)
    assert torch.equal(source.model.layers[0].mlp.down_proj.weight, tiny_model(**SHAPE).model.layers[0].mlp.down_proj.weight)


def shape_words(config):
    return {key: getattr(config, key) for key in ("num_attention_heads", "num_key_value_heads", "intermediate_size")}


@pytest.mark.parametrize("unit", ["head", "kv-group"])
def test_a_target_shape_removes_what_the_density_run_removes_at_that_shape(unit):
    """One shot: the counts the global ranking chose, given as a target, pick the same units."""
    by_density, run, settings = pruned("structured", 0.6, uniform=True, attention_unit=unit)
    chosen = shape_words(pruned_model(by_density, run, settings)[1].config)
    by_target, target_run, target_settings = pruned("structured", uniform=True, attention_unit=unit, target=chosen)
    assert shape_words(pruned_model(by_target, target_run, target_settings)[1].config) == chosen
    assert target_run.pruner.removed == run.pruner.removed
    assert all(torch.equal(a, b) for a, b in zip(projection_weights(by_target), projection_weights(by_density)))
    assert target_settings.density == pytest.approx(target_run.shots[-1].density)


def test_a_target_density_is_its_share_of_the_projection_weights():
    smollm2 = LlamaConfig(vocab_size=49152, hidden_size=576, head_dim=64, num_attention_heads=9, num_key_value_heads=3,
                          num_hidden_layers=30, intermediate_size=1536)
    for heads, neurons in [(3, 512), (6, 384)]:  # the same parameter count
        counts = target_counts(smollm2, dict(num_attention_heads=heads, num_key_value_heads=3, intermediate_size=neurons), "head")
        assert counts.density == pytest.approx(0.375)
        assert (counts.attention_per_group, counts.neurons) == (heads // 3, neurons)


def test_a_target_shape_is_reached_exactly_over_several_shots():
    target = dict(num_attention_heads=2, num_key_value_heads=2, intermediate_size=13)
    model, run, settings = pruned("structured", target=target, shots=3)
    plan, sliced = pruned_model(model, run, settings)
    assert sliced.config.is_uniform and shape_words(sliced.config) == target
    assert [shot.density for shot in run.shots] == sorted((shot.density for shot in run.shots), reverse=True)
    assert len({shot.density for shot in run.shots}) == 3  # every shot removes some of the way
    assert (model(TOKENS) - sliced(TOKENS)).abs().max().item() <= 1e-4


def test_fine_tuning_between_shots_keeps_removed_units_at_zero():
    model, run, settings = pruned("structured", 0.6, uniform=True, shots=3, finetune_steps=2, finetune_lr=1e-3)
    assert [shot.finetune_loss is not None for shot in run.shots] == [True, True, False]
    plan, sliced = pruned_model(model, run, settings)
    assert (model(TOKENS) - sliced(TOKENS)).abs().max().item() <= 1e-4


def test_a_small_factor_budget_estimates_one_layer_at_a_time(monkeypatch):
    import llmshearing.surgeon.shots as shots

    blocks = []
    original = shots.estimate_factors
    monkeypatch.setattr(shots, "estimate_factors", lambda model, data, layers, progress: (
        blocks.append(list(layers)), original(model, data, layers))[1])
    model, run, settings = pruned("structured", 0.7, uniform=True, factor_memory_gb=1e-9)
    assert blocks == [[0], [1], [2]] * 2  # costs, then estimated again for the updates
    assert "1 layers per block" in run.factor_memory


# ---- 2:4 and unstructured ------------------------------------------------------------------------
def test_two_four_leaves_exactly_two_zeros_in_every_group_of_four():
    model, run, _ = pruned("2:4", shots=2)
    for weight in projection_weights(model):
        assert torch.equal((weight.reshape(-1, 4) == 0).sum(1), torch.full((weight.numel() // 4,), 2))
        assert two_zeros_in_every_four(weight)
    assert run.shots[-1].density == 0.5


def test_unstructured_density_is_exact():
    model, run, _ = pruned("unstructured", 0.37, shots=2, allocation="global")
    weights = projection_weights(model)
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.63 * total)
    assert run.shots[-1].density == pytest.approx(1 - zeros / total, abs=1e-12)


@pytest.mark.parametrize("mode,density", [("unstructured", 0.37), ("2:4", 0.5)])
def test_matrix_allocation_prunes_every_matrix_to_the_density_exactly(mode, density):
    model, run, _ = pruned(mode, density, shots=2)
    for weight in projection_weights(model):
        assert int((weight == 0).sum()) == round((1 - density) * weight.numel())
    for layer in range(model.config.num_hidden_layers):
        assert all(value == pytest.approx(density, abs=1e-3) for value in run.pruner.projection_density(layer).values())


def test_semi_structured_conversion_needs_a_gpu():
    from llmshearing.errors import ConfigError

    model, _, _ = pruned("2:4", scoring="magnitude")
    with pytest.raises(ConfigError, match="CUDA"):
        to_semi_structured(model)


def test_two_four_needs_input_sizes_divisible_by_four():
    with pytest.raises(ShapeError, match="divisible by 4"):
        pruned("2:4", shape=dict(hidden_size=46))


@pytest.mark.gpu
def test_semi_structured_model_computes_the_dense_model_logits():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model, _, _ = pruned("2:4", scoring="magnitude", shape=dict(
        hidden_size=128, intermediate_size=256, num_attention_heads=2, num_key_value_heads=2, head_dim=64))
    model = model.to("cuda", torch.float16)
    tokens = torch.randint(0, 97, (2, 32), device="cuda")
    dense = model(tokens)
    assert to_semi_structured(model) == 7 * model.config.num_hidden_layers
    assert ((model(tokens) - dense).abs().max() / dense.abs().max()).item() < 1e-2  # fp16 kernels differ a little


# ---- the command line -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory):
    """A tiny HF model with the sample corpus's vocabulary."""
    model = tiny_model(vocab_size=49152, **SHAPE)
    return export_hf(model, tmp_path_factory.mktemp("tiny") / "hf")


def surgeon(tiny_hf_dir, corpus, out, *options):
    return main(["surgeon", "--model", str(tiny_hf_dir), "--data", str(corpus), "--out", str(out),
                 "--calib-samples", "8", "--seq-len", "32", "--batch-size", "4", *options])


def test_cli_structured_default_exports_per_layer_sizes_that_transformers_loads(tiny_hf_dir, sample_corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned"
    assert surgeon(tiny_hf_dir, sample_corpus, out, "--mode", "structured", "--density", "0.6", "--shots", "2") == 0
    report = json.loads((out / REPORT_FILE).read_text())
    sizes = report["result_shape"]["intermediate_sizes"]
    assert len(sizes) == 3 and len(set(sizes)) > 1 and abs(report["density"] - 0.6) < 0.05
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    ours = load_model(out)
    assert hf.config.intermediate_sizes == ours.config.intermediate_sizes == sizes
    assert [layer.mlp.up_proj.weight.shape[0] for layer in hf.model.layers] == sizes
    with torch.no_grad():
        assert (hf(TOKENS).logits - ours(TOKENS)).abs().max().item() <= 1e-4


def test_cli_structured_exports_a_smaller_model_that_transformers_loads(tiny_hf_dir, sample_corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "pruned"
    assert surgeon(tiny_hf_dir, sample_corpus, out, "--mode", "structured", "--uniform", "--density", "0.7",
                   "--shots", "2") == 0
    report = json.loads((out / REPORT_FILE).read_text())
    assert len(report["layers"]) == 3 and abs(report["density"] - 0.7) < 0.05
    assert report["parameters"]["result"] < report["parameters"]["source"]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ours = load_model(out)
    assert hf.config.intermediate_size == report["result_shape"]["intermediate_size"] < SHAPE["intermediate_size"]
    with torch.no_grad():
        assert (hf(TOKENS).logits - ours(TOKENS)).abs().max().item() <= 1e-4
    assert PruningPlan.load(out).replacement_weights


@pytest.mark.parametrize("options,density", [(("--mode", "2:4"), 0.5),
                                             (("--mode", "unstructured", "--density", "0.5"), 0.5)])
def test_cli_sparse_modes_export_dense_weights_with_zeros(tiny_hf_dir, sample_corpus, tmp_path, options, density):
    out = tmp_path / "pruned"
    assert surgeon(tiny_hf_dir, sample_corpus, out, *options) == 0
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["density"] == density
    assert report["parameters"]["nonzero"] < report["parameters"]["result"] == report["parameters"]["source"]
    weights = projection_weights(load_model(out))
    assert sum(int((w == 0).sum()) for w in weights) == round(density * sum(w.numel() for w in weights))


@pytest.mark.parametrize("options,message", [
    (("--density", "0"), "must be in (0, 1]"),
    (("--density", "1.5"), "must be in (0, 1]"),
    (("--mode", "2:4", "--density", "0.7"), "density must be 0.5"),
    (("--mode", "unstructured"), "needs --density"),
    (("--density", "0.7", "--damping", "0"), "--damping must be positive"),
    (("--density", "0.7", "--shots", "0"), "--shots must be at least 1"),
    (("--mode", "2:4", "--target", "intermediate_size=20"), "--target is for --mode structured"),
    (("--density", "0.7", "--target", "intermediate_size=20"), "not both"),
    (("--target", "hidden_size=32"), "target hidden_size=32 must equal the source's 48"),
    (("--target", "num_attention_heads=2,num_key_value_heads=1"), "target num_key_value_heads=1 must equal"),
    (("--target", "intermediate_size=80"), "larger than the source model's 40"),
    (("--mode", "2:4", "--allocation", "global", "--curvature", "sequential"), "--curvature sequential is for"),
    (("--density", "0.7", "--curvature", "sequential"), "--curvature sequential is for"),
])
def test_bad_settings_are_one_line_errors(tiny_hf_dir, sample_corpus, tmp_path, capsys, options, message):
    assert surgeon(tiny_hf_dir, sample_corpus, tmp_path / "out", *options) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_missing_calibration_data_is_a_one_line_error(tiny_hf_dir, tmp_path, capsys):
    assert surgeon(tiny_hf_dir, tmp_path / "no_corpus", tmp_path / "out", "--density", "0.7") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no_corpus" in err


def keep_source_copies(monkeypatch):
    """Wrap the CLI's ``load_model``: each model it loads is returned as usual, and a copy, taken
    before the CLI prunes it in place, is appended to the returned list (the dense reference,
    without de-quantising the GGUF a second time)."""
    import copy

    loaded = []

    def load_and_keep(*args, **kwargs):
        model = load_model(*args, **kwargs)
        loaded.append(copy.deepcopy(model))
        return model

    monkeypatch.setattr("llmshearing.convert.load_model", load_and_keep)
    return loaded


@pytest.mark.slow
def test_cli_prunes_smollm2_structured_into_a_smaller_working_model(sample_corpus, tmp_path, monkeypatch):
    """The default, per-layer sizes (the uniform path is the same selection with equal counts)."""
    from transformers import AutoModelForCausalLM

    from llmshearing.assets import smollm2_gguf_path
    from llmshearing.eval import evaluate_domains

    out = tmp_path / "smollm2"
    sources = keep_source_copies(monkeypatch)
    assert main(["surgeon", "--model", str(smollm2_gguf_path()), "--data", str(sample_corpus), "--out", str(out),
                 "--calib-samples", "8", "--seq-len", "64", "--mode", "structured",
                 "--density", "0.9", "--damping", "0.1"]) == 0
    hf = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert hf.config.num_key_value_heads == 3 and hf.config.num_hidden_layers == 30
    assert len(set(hf.config.intermediate_sizes)) > 1 and sum(hf.config.intermediate_sizes) < 30 * 1536
    pruned = load_model(out)
    (dense,) = sources  # the SmolLM2 GGUF as the CLI loaded it, before pruning
    kwargs = dict(domains=["code", "prose"], batch_size=4, max_batches=1)
    assert evaluate_domains(pruned, sample_corpus, **kwargs)["all"].loss < evaluate_domains(dense, sample_corpus, **kwargs)["all"].loss + 1.0
