"""Minitron importance scores against a hand computation, and top-k selection into a valid plan."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmshearing.errors import ConfigError, ShapeError
from llmshearing.minitron import Importance, build_plan, estimate_importance
from llmshearing.minitron.selection import select_heads, select_layers, top_indices
from llmshearing.model.rope import apply_rope, rope_cos_sin
from llmshearing.shape import TargetShape
from llmshearing.slicing import slice_model
from tests.helpers import tiny_model

BATCHES = [torch.randint(0, 97, (3, 7), generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
TOKENS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))


@torch.no_grad()
def manual_forward(model, ids, skip_layer=None):
    """The model computed step by step (explicit causal softmax attention), recording activations."""
    config = model.config
    batch, seq = ids.shape
    h = model.model.embed_tokens(ids)
    cos, sin = rope_cos_sin(model.model.rope_inv_freq(h.device), torch.arange(seq), h.dtype)
    causal = torch.ones(seq, seq).tril().bool()
    records = []
    for index, layer in enumerate(model.model.layers):
        if index == skip_layer:
            continue
        attn = layer.self_attn
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(batch, seq, config.num_attention_heads, -1).transpose(1, 2)
        k = attn.k_proj(x).view(batch, seq, config.num_key_value_heads, -1).transpose(1, 2)
        v = attn.v_proj(x).view(batch, seq, config.num_key_value_heads, -1).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = k.repeat_interleave(config.query_groups, dim=1)
        v = v.repeat_interleave(config.query_groups, dim=1)
        weights = (q @ k.transpose(-1, -2) / math.sqrt(config.head_dim)).masked_fill(~causal, float("-inf"))
        heads = (weights.softmax(-1) @ v).transpose(1, 2)  # [batch, seq, heads, head_dim]
        mid = h + attn.o_proj(heads.reshape(batch, seq, -1))
        y = layer.post_attention_layernorm(mid)
        act = F.silu(layer.mlp.gate_proj(y)) * layer.mlp.up_proj(y)
        out = mid + layer.mlp.down_proj(act)
        records.append(dict(heads=heads, act=act, norms=[x, y], h_in=h, h_out=out))
        h = out
    final = model.model.norm(h)
    return model.lm_head(final), records, final


def reduce(values, sequence, batch):
    """values [samples, seq, units] -> [units], written out per aggregation name."""
    per_sample = {"mean": values.mean(1), "l2": values.pow(2).sum(1).sqrt(),
                  "var": ((values - values.mean(1, keepdim=True)) ** 2).mean(1)}[sequence]
    return {"mean": per_sample.mean(0), "l2": per_sample.pow(2).sum(0).sqrt(),
            "var": ((per_sample - per_sample.mean(0)) ** 2).mean(0)}[batch]


def hand_scores(model, sequence, batch):
    runs = [manual_forward(model, ids) for ids in BATCHES]
    layers = model.config.num_hidden_layers

    def stacked(get):
        return torch.cat([get(records, final) for _, records, final in runs])

    heads = torch.stack([reduce(stacked(lambda r, f: r[i]["heads"].norm(dim=-1)), sequence, batch)
                         for i in range(layers)])
    neurons = torch.stack([reduce(stacked(lambda r, f: r[i]["act"].abs()), sequence, batch) for i in range(layers)])
    norm_outputs = [lambda r, f, i=i, n=n: r[i]["norms"][n] for i in range(layers) for n in (0, 1)]
    norm_outputs.append(lambda r, f: f)
    hidden = sum(reduce(stacked(get).abs(), sequence, batch) for get in norm_outputs)
    block = torch.stack([
        stacked(lambda r, f: 1 - F.cosine_similarity(r[i]["h_in"], r[i]["h_out"], dim=-1)).mean() for i in range(layers)
    ])
    return heads, neurons, hidden, block


def mean_loss(model, skip_layer=None):
    total, tokens = 0.0, 0
    for ids in BATCHES:
        logits = manual_forward(model, ids, skip_layer)[0][:, :-1]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"))
        tokens += ids[:, 1:].numel()
    return total / tokens


def test_manual_forward_is_the_model():
    model = tiny_model()
    assert (manual_forward(model, TOKENS)[0] - model(TOKENS)).abs().max() < 1e-4


@pytest.mark.parametrize("sequence, batch", [("mean", "l2"), ("l2", "mean"), ("var", "var")])
def test_width_scores_and_block_importance_equal_a_hand_computation(sequence, batch):
    model = tiny_model()
    scores = estimate_importance(model, BATCHES, sequence=sequence, batch=batch)
    heads, neurons, hidden, block = hand_scores(model, sequence, batch)
    assert scores.heads.shape == (3, 6) and scores.neurons.shape == (3, 37) and scores.hidden.shape == (45,)
    torch.testing.assert_close(scores.heads, heads, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores.neurons, neurons, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores.hidden, hidden, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores.depth["block_importance"], block, rtol=1e-4, atol=1e-6)
    assert "lm_loss" not in scores.depth  # costs a forward per layer: only when asked for


def test_lm_loss_depth_score_is_the_loss_increase_without_the_layer():
    model = tiny_model()
    scores = estimate_importance(model, BATCHES, depth_metric="lm_loss")
    base = mean_loss(model)
    expected = torch.tensor([mean_loss(model, skip_layer=i) - base for i in range(3)])
    torch.testing.assert_close(scores.depth["lm_loss"], expected, rtol=1e-4, atol=1e-4)


def test_top_indices_are_sorted_stable_and_skip_nan():
    assert top_indices(torch.tensor([0.5, 2.0, float("nan"), 2.0, 1.0]), 3) == [1, 3, 4]
    assert top_indices(torch.ones(4), 2) == [0, 1]


def test_layer_selection_top_or_contiguous_block():
    scores = torch.tensor([5.0, 0.1, 3.0, 0.2, 0.3, 4.0])
    assert select_layers(scores, 4, "top") == [0, 2, 4, 5]
    assert select_layers(scores, 4, "contiguous") == [0, 1, 2, 5]  # drops the block 3-4 (0.5 lost)
    assert select_layers(scores, 6, "contiguous") == list(range(6))


def test_gqa_selection_drops_a_whole_kv_group_or_heads_inside_groups():
    # SmolLM2: 9 query heads in 3 KV groups -> 6 heads / 2 KV: a whole group goes
    scores = torch.tensor([9.0, 1, 1, 0.5, 0.5, 0.5, 2, 2, 2])
    assert select_heads(scores, 3, 2, 3) == ([0, 2], [0, 1, 2, 6, 7, 8])
    # 6 heads / 3 KV: keep every group, the best 2 heads inside each, ordered by group
    assert select_heads(scores, 3, 3, 2) == ([0, 1, 2], [0, 1, 3, 4, 6, 7])
    # groups are compared by the heads they would keep: group 0 keeps only its 9.0 head
    assert select_heads(torch.tensor([9.0, 0, 0, 4, 4, 4]), 3, 1, 1) == ([0], [0])


def test_plan_is_valid_minitron_plan_without_scales():
    model = tiny_model()
    target = TargetShape(hidden_size=30, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=2,
                         intermediate_size=20)
    plan = build_plan(estimate_importance(model, BATCHES), target)
    assert plan.method == "minitron" and plan.target_shape() == target
    assert plan.hidden_scale is None and all(l.head_scale is None and l.neuron_scale is None for l in plan.layers)
    sliced = slice_model(model, plan)
    assert (sliced(TOKENS) - model(TOKENS, plan.to_masks())).abs().max() <= 1e-4


@pytest.mark.parametrize("tied", [False, True])
def test_target_equal_to_the_source_gives_identical_logits(tied):
    model = tiny_model(tie_word_embeddings=tied)
    plan = build_plan(estimate_importance(model, BATCHES), TargetShape.of(model.config))
    assert torch.equal(slice_model(model, plan)(TOKENS), model(TOKENS))


@pytest.mark.parametrize("order", ["depth-first", "width-first"])
def test_ordered_estimates_keep_source_indices_and_refuse_another_first_stage(order):
    model = tiny_model()
    target = TargetShape(hidden_size=30, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=2,
                         intermediate_size=20)
    scores = estimate_importance(model, BATCHES, order=order, target=target)
    plan = build_plan(scores, target)
    assert plan.target_shape() == target
    if order == "depth-first":  # width was scored with the dropped layer removed
        kept = [layer.source_index for layer in plan.layers]
        dropped = ({0, 1, 2} - set(kept)).pop()
        assert torch.isnan(scores.heads[dropped]).all() and not torch.isnan(scores.heads[kept]).any()
        joint = estimate_importance(model, BATCHES)
        torch.testing.assert_close(scores.depth["block_importance"], joint.depth["block_importance"])
        other = TargetShape(**{**target.to_dict(), "num_hidden_layers": 3})
    else:
        other = TargetShape(**{**target.to_dict(), "hidden_size": 40})
    with pytest.raises(ShapeError, match=f"estimated {order}"):
        build_plan(scores, other)
    # a target with the same first stage reuses the scores
    same_first_stage = "intermediate_size" if order == "depth-first" else "num_hidden_layers"
    assert build_plan(scores, TargetShape(**{**target.to_dict(), same_first_stage: 1})).validate() is None


def test_importance_round_trips_through_json_with_nan(tmp_path):
    scores = Importance.random(tiny_model().config, seed=4)
    scores.heads[1] = float("nan")
    loaded = Importance.load(scores.save(tmp_path))
    torch.testing.assert_close(loaded.heads, scores.heads, equal_nan=True)
    torch.testing.assert_close(loaded.neurons, scores.neurons)
    assert loaded.depth.keys() == scores.depth.keys() and loaded.metadata == scores.metadata


def test_importance_of_another_model_or_bad_options_are_config_errors(tmp_path):
    scores = Importance.random(tiny_model().config)
    with pytest.raises(ConfigError, match="another model.*hidden_size"):
        scores.check_source(tiny_model(hidden_size=40).config)
    del scores.depth["lm_loss"]
    shallower = TargetShape(**{**TargetShape.of(scores.source).to_dict(), "num_hidden_layers": 2})
    with pytest.raises(ConfigError, match="no 'lm_loss'"):
        build_plan(scores, shallower, depth_metric="lm_loss")
    with pytest.raises(ConfigError, match="sequence aggregation"):
        estimate_importance(tiny_model(), BATCHES, sequence="median")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ConfigError, match="not a Minitron importance file"):
        Importance.load(tmp_path / "bad.json")


@pytest.mark.slow
def test_smollm2_importance_pruning_drops_whole_kv_groups_and_beats_random(sample_corpus):
    from llmshearing.assets import smollm2_gguf_path
    from llmshearing.convert import load_model
    from llmshearing.data.calibration import calibration_batches
    from llmshearing.minitron.depth import mean_lm_loss

    source = load_model(smollm2_gguf_path()).eval()
    target = TargetShape(hidden_size=384, num_attention_heads=6, num_key_value_heads=2, num_hidden_layers=20,
                         intermediate_size=1024)
    calibration = calibration_batches(sample_corpus, 10, seq_len=64, batch_size=5, seed=0)
    held_out = calibration_batches(sample_corpus, 10, seq_len=64, batch_size=5, seed=1)
    plan = build_plan(estimate_importance(source, calibration), target)
    for layer in plan.layers:  # 3 query heads per group in and out: whole groups are kept or dropped
        assert layer.kept_heads == [h for g in layer.kept_kv_heads for h in range(3 * g, 3 * g + 3)]
    pruned = mean_lm_loss(slice_model(source, plan), held_out)
    random = mean_lm_loss(slice_model(source, build_plan(Importance.random(source.config), target)), held_out)
    assert pruned < random - 1.0, (pruned, random)
