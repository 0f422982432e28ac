"""Warm start of the L0 masks from Minitron's importance (issue 16): the masks start on its selection."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmshearing.config import load_config
from llmshearing.errors import ConfigError
from llmshearing.minitron.importance import Importance
from llmshearing.minitron.selection import build_plan
from llmshearing.model import LlamaConfig
from llmshearing.shape import TargetShape
from llmshearing.sheared import L0Module
from llmshearing.sheared.hard_concrete import DEFAULT_LOG_ALPHA_RANGE, HALF_OPEN_LOG_ALPHA, WARM_START_LOG_ALPHA_RANGE
from llmshearing.sheared.warm_start import load_importance, rank_offsets, warm_start

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "yamls" / "tiny_prune.yaml"
SOURCE = LlamaConfig(vocab_size=53, hidden_size=23, intermediate_size=37, num_hidden_layers=5,
                     num_attention_heads=6, num_key_value_heads=2, head_dim=6)
TARGETS = {
    "every structure": TargetShape(hidden_size=13, num_attention_heads=2, num_key_value_heads=1,
                                   num_hidden_layers=3, intermediate_size=21),
    "heads within groups": TargetShape(hidden_size=23, num_attention_heads=4, num_key_value_heads=2,
                                       num_hidden_layers=5, intermediate_size=30),
}


def test_rank_offsets_put_the_cut_at_zero_rank_ties_by_index_and_leave_nan_alone():
    scores = torch.tensor([[0.5, 3.0, 0.5, float("nan"), 2.0]])
    offsets = rank_offsets(scores, keep=0.4)
    # ranks: 3.0 > 2.0 > 0.5 (index 0) > 0.5 (index 2) > NaN; q = 1, .75, .5, .25, (0)
    assert torch.allclose(offsets, torch.tensor([[0.5 - 0.6, 1.0 - 0.6, 0.25 - 0.6, 0.0, 0.75 - 0.6]]))
    kept = offsets[0, [1, 4]]
    assert (kept > 0).all() and (offsets[0, [0, 2]] < 0).all()  # the two a keep of 0.4 of 5 takes are above


# the defaults, the earlier ones (spread 40 in the reference's range), and the first measured setting
# (centre at the initial log_alpha, clamped to log 100)
@pytest.mark.parametrize("spread,centre,log_alpha_range", [(160.0, -1.6, WARM_START_LOG_ALPHA_RANGE),
                                                           (40.0, -1.6, DEFAULT_LOG_ALPHA_RANGE),
                                                           (4.0, 4.6, DEFAULT_LOG_ALPHA_RANGE)])
@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_warm_started_masks_select_exactly_what_minitron_selects(target, spread, centre, log_alpha_range):
    importance = Importance.random(SOURCE, seed=4)
    l0 = L0Module(SOURCE, target, init_mean=5.0, init_std=0.01, log_alpha_range=log_alpha_range)
    warm_start(l0, importance, spread=spread, centre=centre)
    ours, minitron = l0.eval().make_plan(), build_plan(importance, target)
    assert ours.kept_hidden == minitron.kept_hidden
    assert [layer.source_index for layer in ours.layers] == [layer.source_index for layer in minitron.layers]
    for mine, theirs in zip(ours.layers, minitron.layers):
        assert mine.kept_kv_heads == theirs.kept_kv_heads
        assert sorted(mine.kept_heads) == sorted(theirs.kept_heads)
        assert mine.kept_neurons == theirs.kept_neurons
    low, high = l0.gates["intermediate"].log_alpha_range
    for gate in l0.gates.values():
        assert gate.log_alpha.min() >= low and gate.log_alpha.max() <= high


@pytest.mark.parametrize("target", TARGETS.values(), ids=TARGETS.keys())
def test_by_default_the_warm_started_masked_model_starts_as_the_one_shot_slice(target):
    """Expected sizes at the target from step 0; every kept unit but those ranked next to the cut at
    the top of the range (scale ~1 in the plan), every cut one but those at the bottom."""
    l0 = L0Module(SOURCE, target, log_alpha_range=WARM_START_LOG_ALPHA_RANGE)
    warm_start(l0, Importance.random(SOURCE, seed=4))
    for name, value in l0.expected_sizes().items():
        assert value.item() == pytest.approx(l0.final_fraction(name), abs=0.05), name
    l0.anchor_ramp()
    l0.lagrangian_warmup_steps = 10
    # the ramp starts where the masks are, or at the target if they start below it
    starts = {n: max(v.item(), l0.final_fraction(n)) for n, v in l0.expected_sizes().items()}
    assert l0.target_fractions(0) == pytest.approx(starts)
    plan = l0.make_plan()
    neuron_scales = torch.tensor([s for layer in plan.layers for s in layer.neuron_scale])
    assert (neuron_scales > 0.99).float().mean() > 0.7  # rows of 37: the ones next to the cut are many
    assert all(entry["kept_while_shut"] == 0 for entry in plan.metadata["mask_convergence"])


def test_without_warm_start_the_selection_is_not_minitrons():
    """The test above is not passed by the untrained masks' own tie-breaking."""
    importance = Importance.random(SOURCE, seed=4)
    target = TARGETS["every structure"]
    l0 = L0Module(SOURCE, target, init_mean=2.0, init_std=0.01).eval()
    assert l0.make_plan().layers[0].kept_neurons != build_plan(importance, target).layers[0].kept_neurons


def test_spread_is_the_log_alpha_distance_between_a_rows_best_and_worst_unit():
    l0 = L0Module(SOURCE, TARGETS["every structure"], init_mean=0.0, init_std=0.0)
    warm_start(l0, Importance.random(SOURCE, seed=1), spread=3.0)
    neurons = l0.gates["intermediate"].log_alpha
    assert torch.allclose(neurons.max(1).values - neurons.min(1).values, torch.full((5,), 3.0))


def test_importance_of_another_model_is_refused():
    other = Importance.random(LlamaConfig(**{**SOURCE.to_dict(), "intermediate_size": 40}))
    with pytest.raises(ConfigError, match="another model"):
        warm_start(L0Module(SOURCE, TARGETS["every structure"]), other)


def test_a_warm_start_defaults_to_a_tenth_of_the_cold_start_rates_and_a_wider_log_alpha_range():
    from llmshearing.sheared.l0_pruning import L0Pruning

    cold, warm = L0Pruning({"intermediate_size": 8}), L0Pruning({"intermediate_size": 8}, warm_start="importance.json")
    assert (cold.mask_lr, cold.lag_lr) == (1.0, 1.0)
    assert (warm.mask_lr, warm.lag_lr) == (0.1, 0.1)
    assert warm.warm_start_centre == HALF_OPEN_LOG_ALPHA  # the yaml's null and the API's default agree
    assert load_config(REPO / "yamls" / "demo_smollm2_prune.yaml").pruning.warm_start_centre is None
    assert (cold.log_alpha_range, warm.log_alpha_range) == (DEFAULT_LOG_ALPHA_RANGE, WARM_START_LOG_ALPHA_RANGE)
    assert load_config(REPO / "yamls" / "demo_smollm2_prune.yaml").pruning.log_alpha_range is None
    assert L0Pruning({"intermediate_size": 8}, warm_start="importance.json", mask_lr=0.5).mask_lr == 0.5
    assert L0Pruning({"intermediate_size": 8}, warm_start="i.json", log_alpha_range=[-3, 3]).log_alpha_range == (-3, 3)
    assert load_config(REPO / "yamls" / "demo_smollm2_prune.yaml").pruning.mask_lr is None  # the default applies


def test_a_log_alpha_range_upside_down_is_one_line():
    from llmshearing.sheared.l0_pruning import L0Pruning

    with pytest.raises(ConfigError, match=r"pruning.log_alpha_range must be \[low, high\] with low < high, got \[1.0, 0.0\]"):
        L0Pruning({"intermediate_size": 8}, log_alpha_range=[1, 0])


def test_a_missing_importance_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ConfigError, match=r"pruning.warm_start: no importance file .* `llmshearing prune minitron"):
        load_importance(str(tmp_path / "nothing.json"))


def test_the_trainer_starts_the_masks_from_the_yaml_s_importance_file(sample_corpus, tmp_path):
    from llmshearing.sheared.l0_pruning import L0Pruning
    from llmshearing.training import build_trainer

    base = load_config(TINY, [f"data.path={sample_corpus}"])
    source = LlamaConfig.from_dict(dict(base.model.config))
    importance = Importance.random(source, seed=2)
    importance.save(tmp_path / "minitron")  # a `prune minitron` output dir holds importance.json
    cfg = load_config(TINY, [f"data.path={sample_corpus}", f"pruning.warm_start={tmp_path / 'minitron'}",
                             "save_folder=null", "max_duration=1ba", "pruning.log_alpha_range=[-9.2,4.6]"])
    trainer = build_trainer(cfg)
    try:
        assert any(isinstance(a, L0Pruning) for a in trainer.state.algorithms)
        l0 = trainer.state.model.l0
        assert all(gate.log_alpha_range == (-9.2, 4.6) for gate in l0.gates.values())
        assert min(gate.log_alpha.min().item() for gate in l0.gates.values()) == pytest.approx(-9.2)
        mask_group, lambda_group = trainer.state.optimizers[0].param_groups[-2:]
        assert mask_group["lr"] == lambda_group["lr"] == 0.3  # tiny_prune.yaml's own rates win over the default
        plan = l0.eval().make_plan()
        expected = build_plan(importance, TargetShape.from_mapping(cfg.pruning.target, source))
        assert plan.kept_hidden == expected.kept_hidden
        assert [layer.kept_neurons for layer in plan.layers] == [layer.kept_neurons for layer in expected.layers]
    finally:
        trainer.close()


@pytest.mark.filterwarnings("ignore:The warmup duration is 0")
def test_pruning_with_a_teacher_and_a_warm_start_composes(sample_corpus, tmp_path):
    """Issue 16's variant: L0 masks warm-started, distilled from the source, one Trainer."""
    from llmshearing.convert import export_hf
    from llmshearing.model import LlamaForCausalLM
    from llmshearing.training import build_trainer

    source = LlamaConfig.from_dict(dict(load_config(TINY, [f"data.path={sample_corpus}"]).model.config))
    torch.manual_seed(0)
    teacher = export_hf(LlamaForCausalLM(source), tmp_path / "teacher")
    Importance.random(source, seed=2).save(tmp_path / "importance.json")
    cfg = load_config(TINY, [f"data.path={sample_corpus}", f"pruning.warm_start={tmp_path / 'importance.json'}",
                             f"teacher.path={teacher}", "save_folder=null", "max_duration=2ba", "eval_interval=2ba"])
    trainer = build_trainer(cfg)
    try:
        trainer.fit()
        loss = trainer.state.loss
        assert {"lm", "kd", "lagrangian", "total"} <= set(loss)
        # alpha 0: the KL alone, plus the Lagrangian; the LM loss is logged, not optimised
        assert torch.allclose(loss["total"], loss["kd"] + loss["lagrangian"])
        assert not torch.allclose(loss["lm"], loss["kd"])
        assert torch.isfinite(loss["total"])
    finally:
        trainer.close()
