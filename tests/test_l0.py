import math

import numpy as np
import pytest
import torch

from llmshearing.errors import CheckpointError, ShapeError
from llmshearing.model import LlamaConfig, LlamaForCausalLM
from llmshearing.shape import TargetShape
from llmshearing.sheared import HardConcrete, L0Module
from llmshearing.sheared.noise import NoiseStream
from llmshearing.slicing import slice_model

BIG = 100.0  # |log_alpha| at which keep probabilities are exactly 0 or 1 in fp32


def gqa_config(tied=False):
    # 6 query heads in 2 KV groups; head_dim given explicitly so that sizes can be odd
    return LlamaConfig(vocab_size=53, hidden_size=23, intermediate_size=37, num_hidden_layers=4,
                       num_attention_heads=6, num_key_value_heads=2, head_dim=6, tie_word_embeddings=tied,
                       initializer_range=0.1)


def mha_config(tied=False):
    return LlamaConfig(vocab_size=41, hidden_size=19, intermediate_size=29, num_hidden_layers=3,
                       num_attention_heads=5, num_key_value_heads=5, head_dim=4, tie_word_embeddings=tied,
                       initializer_range=0.1)


def shape(hidden, heads, kv, layers, d_ff):
    return TargetShape(hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                       num_hidden_layers=layers, intermediate_size=d_ff)


GQA_ALL_PRUNED = shape(13, 2, 1, 3, 21)  # KV groups 2->1 and heads per group 3->2
CASES = {
    "gqa-all": (gqa_config, GQA_ALL_PRUNED),
    "gqa-groups-only": (gqa_config, shape(17, 3, 1, 4, 37)),
    "gqa-heads-in-groups": (gqa_config, shape(23, 4, 2, 2, 30)),
    "mha": (mha_config, shape(11, 3, 3, 2, 17)),
}


def set_binary_gates(l0: L0Module, seed=0):
    """Random 0/1 keep scores with exactly the target count per row, as ±BIG log_alpha."""
    generator = torch.Generator().manual_seed(seed)
    source, target = l0.source, l0.target

    def exactly_k(rows_shape, k):
        return torch.rand(rows_shape, generator=generator).argsort(-1).argsort(-1) < k

    keep = {
        "layer": lambda: exactly_k((source.num_hidden_layers,), target.num_hidden_layers),
        "kv_group": lambda: exactly_k(l0.gate_shapes["kv_group"], target.num_key_value_heads),
        "head": lambda: exactly_k((source.num_hidden_layers, source.num_key_value_heads, source.query_groups),
                                  target.query_groups).flatten(1),
        "intermediate": lambda: exactly_k(l0.gate_shapes["intermediate"], target.intermediate_size),
        "hidden": lambda: exactly_k((source.hidden_size,), target.hidden_size),
    }
    with torch.no_grad():
        for name, gate in l0.gates.items():
            gate.log_alpha.copy_(torch.where(keep[name](), BIG, -BIG))


def randomize_norms(model):
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)


# ---- hard concrete -----------------------------------------------------------------------------

def test_hard_concrete_samples_in_unit_interval_with_exact_zeros_and_ones():
    torch.manual_seed(0)
    gate = HardConcrete(20000, init_mean=0.0, init_std=0.1)
    z = gate.sample()
    assert z.shape == (20000,)
    assert z.min() >= 0 and z.max() <= 1
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    z.sum().backward()
    assert gate.log_alpha.grad.abs().sum() > 0


def test_keep_probability_matches_monte_carlo():
    torch.manual_seed(0)
    log_alphas = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])
    samples = 200_000
    gate = HardConcrete((len(log_alphas), samples))
    with torch.no_grad():
        gate.log_alpha.copy_(log_alphas[:, None].expand(-1, samples))
    estimated = (gate.sample() > 0).float().mean(1)
    formula = gate.keep_probability()[:, 0]
    # binomial std <= 0.0012 at this sample size
    torch.testing.assert_close(estimated, formula.detach(), atol=0.01, rtol=0)


def test_soft_values_and_clamp():
    gate = HardConcrete((3,), init_mean=0.5, init_std=0.0)
    torch.testing.assert_close(gate.soft_values(), torch.full((3,), torch.sigmoid(torch.tensor(0.6)).item()))
    with torch.no_grad():
        gate.log_alpha.fill_(7.0)
    gate.clamp_()
    torch.testing.assert_close(gate.log_alpha.detach(), torch.full((3,), math.log(100.0)))
    assert gate.keep_probability().requires_grad


def test_keep_score_counts_a_gate_at_the_floor_as_shut_and_at_the_top_as_open():
    low, high = math.log(0.01), math.log(100.0)
    gate = HardConcrete((5,), init_std=0.0)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-9.0, low, 0.0, high, 9.0]))
    score = gate.keep_score()
    assert score[[0, 1]].tolist() == [0.0, 0.0] and score[[3, 4]].tolist() == [1.0, 1.0]
    assert 0.0 < score[2].item() < 1.0
    # the reference's P(gate > 0) never reaches 0: a shut gate still counts ~0.047
    assert gate.keep_probability()[1].item() == pytest.approx(0.0474, abs=1e-3)
    score.sum().backward()
    assert (gate.log_alpha.grad > 0).all()  # gates at the bounds still feel the Lagrangian


def test_masks_that_keep_exactly_the_target_meet_it_only_with_the_normalized_scores():
    """A quarter of the neurons at the top of the range, the rest at the floor: the target met. The
    reference's score counts the shut three quarters at 0.047 each, so its Lagrangian would go on
    shutting: the gap is what pulls kept gates half shut at high prune ratios."""
    source = gqa_config()
    target = shape(23, 6, 2, 4, 9)  # 37 -> 9 neurons per layer
    for normalized, gap in [(True, 0.0), (False, (1 - 9 / 37) * 0.0474)]:
        l0 = L0Module(source, target, normalized_keep_scores=normalized)
        with torch.no_grad():
            keep = torch.arange(37) < 9
            l0.gates["intermediate"].log_alpha.copy_(torch.where(keep, math.log(100.0), math.log(0.01)).expand(4, -1))
        assert l0.expected_sizes()["intermediate"].item() - 9 / 37 == pytest.approx(gap, abs=1e-3)


@pytest.mark.parametrize("normalized", [True, False])
def test_learned_masks_keep_no_shut_gate_with_the_normalized_scores(normalized):
    """A loss that each open neuron lowers by its own amount, plus the Lagrangian at 24 % of the
    neurons, the default learning rates (1.0): with the reference's score the masks end on target
    with kept gates shut (the plan keeps them at scale ~0.004); with the normalized score none."""
    torch.manual_seed(0)
    l0 = L0Module(gqa_config(), shape(23, 6, 2, 4, 9), normalized_keep_scores=normalized).train()
    value = torch.rand(4, 37) + 0.5
    optimizer = torch.optim.Adam([{"params": l0.mask_parameters()}, {"params": l0.lagrangian_parameters()}], lr=1.0)
    for step in range(400):
        loss = -(value * l0()["intermediate_z"]).mean() + l0.lagrangian(step)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        l0.clamp_()
    [report] = l0.make_plan().metadata["mask_convergence"]
    assert report["expected_fraction"] == pytest.approx(9 / 37, abs=0.01)
    assert (report["kept_while_shut"] == 0) == normalized
    if not normalized:
        assert report["kept_while_shut"] >= 4


def test_masks_are_sampled_from_log_alpha_inside_its_range():
    """init_mean 5 is above log(100): the gates start at the bound; values loaded (or set) outside
    the range are clamped before masks are sampled from them. Deterministic masks and the plan read
    the values as they are (training leaves them in range after every step)."""
    low, high = math.log(0.01), math.log(100.0)
    assert torch.equal(HardConcrete((4,), init_mean=5.0).log_alpha.detach(), torch.full((4,), high))
    l0 = L0Module(gqa_config(), GQA_ALL_PRUNED)
    state = l0.state_dict()
    outside = torch.linspace(-9.0, 9.0, gqa_config().hidden_size)
    state["gates.hidden.log_alpha"] = outside
    l0.load_state_dict(state)
    l0.eval()()
    assert torch.equal(l0.gates["hidden"].log_alpha.detach(), outside)
    l0.train()()
    assert torch.equal(l0.gates["hidden"].log_alpha.detach(), outside.clamp(low, high))


def test_one_step_from_init_matches_the_reference_that_clamps_before_every_forward():
    """princeton-nlp/LLM-Shearing clamps log_alpha to [log 0.01, log 100] before every forward, so
    its first step starts from the bound, not from init_mean 5. One Adam step of the module as
    L0Pruning runs it (forward, backward, step, clamp) equals that procedure written out here."""
    low, high, seed = math.log(0.01), math.log(100.0), 3
    source, target = gqa_config(), shape(13, 6, 2, 4, 21)  # prunes neurons and hidden channels only
    names = ("intermediate", "hidden")  # the module's gate order (creation and noise draws)
    # positive: a loss that every mask value raises, so each gate with a gradient is pushed down
    weights = {name: torch.rand(shape_, generator=torch.Generator().manual_seed(1)) + 0.5
               for name, shape_ in (("intermediate", (4, 37)), ("hidden", (23,)))}

    torch.manual_seed(0)
    l0 = L0Module(source, target, seed=seed).train()
    optimizer = torch.optim.Adam(l0.mask_parameters(), lr=1.0)
    masks = l0()
    sum((weights[name] * masks[f"{name}_z"]).sum() for name in names).backward()
    optimizer.step()
    l0.clamp_()

    def reference_step(clamp_first: bool) -> dict:
        torch.manual_seed(0)
        log_alpha = {name: torch.empty(l0.gate_shapes[name]).normal_(5.0, 0.01) for name in names}
        if clamp_first:
            log_alpha = {name: value.clamp(low, high) for name, value in log_alpha.items()}
        log_alpha = {name: value.requires_grad_() for name, value in log_alpha.items()}
        generator = NoiseStream(seed).next_generator(torch.device("cpu"))  # the module's first draw
        loss = 0.0
        for name in names:
            u = torch.empty(l0.gate_shapes[name]).uniform_(1e-6, 1 - 1e-6, generator=generator)
            z = torch.sigmoid((torch.log(u / (1 - u)) + log_alpha[name]) / (2 / 3)) * 1.2 - 0.1
            loss = loss + (weights[name] * z.clamp(0, 1)).sum()
        reference_optimizer = torch.optim.Adam(list(log_alpha.values()), lr=1.0)
        loss.backward()
        reference_optimizer.step()
        return {name: value.detach().clamp(low, high) for name, value in log_alpha.items()}

    reference, unclamped_first = reference_step(True), reference_step(False)
    pushed_down = 0
    for name in names:
        mine = l0.gates[name].log_alpha.detach()
        torch.testing.assert_close(mine, reference[name])
        # the step from 5 (what the module did before) leaves a gate pushed down by both ~0.4 higher
        down = (mine < high - 0.5) & (unclamped_first[name] < high - 0.5)
        pushed_down += int(down.sum())
        torch.testing.assert_close(unclamped_first[name][down] - mine[down],
                                   torch.full((int(down.sum()),), 5.0 - high), atol=0.02, rtol=0)
    assert pushed_down >= 3


# ---- structures, selection, plan --------------------------------------------------------------

def test_a_source_with_per_layer_sizes_is_refused():
    from llmshearing.errors import ConfigError

    source = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, intermediate_sizes=[64, 30])
    target = TargetShape(hidden_size=16, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=2,
                         intermediate_size=20)
    with pytest.raises(ConfigError, match=r"pruning to a target shape needs the same sizes in every layer; .*"
                                          r"\(intermediate_sizes 30-64\)"):
        L0Module(source, target)


def test_structures_created_only_where_target_shrinks():
    assert L0Module(gqa_config(), GQA_ALL_PRUNED).structures == ("layer", "kv_group", "head", "intermediate", "hidden")
    assert L0Module(gqa_config(), CASES["gqa-groups-only"][1]).structures == ("kv_group", "hidden")
    assert L0Module(gqa_config(), CASES["gqa-heads-in-groups"][1]).structures == ("layer", "head", "intermediate")
    l0 = L0Module(mha_config(), CASES["mha"][1], block_masks=True)
    assert set(l0.gates) == {"layer", "kv_group", "intermediate", "hidden", "head_layer", "mlp"}
    assert len(l0.lagrangian_parameters()) == 2 * 4
    assert len(l0.mask_parameters()) == 6


def test_training_masks_only_for_pruned_structures():
    torch.manual_seed(0)
    l0 = L0Module(gqa_config(), shape(23, 6, 2, 4, 30)).train()
    masks = l0()
    assert set(masks) == {"intermediate_z"}
    assert masks["intermediate_z"].shape == (4, 37)
    masks = L0Module(gqa_config(), GQA_ALL_PRUNED, block_masks=True).train()()
    assert set(masks) == {"layer_z", "head_layer_z", "head_z", "mlp_z", "intermediate_z", "hidden_z"}
    assert all(((m >= 0) & (m <= 1)).all() for m in masks.values())


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_expected_parameters_equal_sliced_model_when_scores_are_binary(case, tied):
    make_config, target = CASES[case]
    torch.manual_seed(0)
    source = make_config(tied)
    l0 = L0Module(source, target)
    set_binary_gates(l0)
    sliced = slice_model(LlamaForCausalLM(source), l0.make_plan())
    assert sliced.config.num_attention_heads == target.num_attention_heads
    assert l0.expected_parameters().item() == sliced.num_parameters()
    expected = {name: value.item() for name, value in l0.expected_sizes().items()}
    assert expected == pytest.approx(l0.target_fractions(), abs=1e-6)


def test_expected_parameters_without_pruning_equal_source():
    source = gqa_config()
    l0 = L0Module(source, TargetShape.of(source))
    assert l0.structures == () and l0.train()() == {}
    assert l0.expected_parameters().item() == LlamaForCausalLM(source).num_parameters()


@pytest.mark.parametrize("make_config,target,tied", [
    (gqa_config, GQA_ALL_PRUNED, False),
    (mha_config, CASES["mha"][1], True),
])
def test_deterministic_masks_keep_target_counts_and_match_sliced_model(make_config, target, tied):
    torch.manual_seed(0)
    source = make_config(tied)
    l0 = L0Module(source, target, block_masks=True, init_mean=0.0, init_std=2.0).eval()
    masks = l0()
    plan = l0.make_plan()
    reference = plan.to_masks()
    assert set(masks) == set(reference)
    for name in masks:
        assert torch.equal(masks[name], reference[name]), name

    kept_layers = masks["layer_z"].nonzero().flatten()
    assert len(kept_layers) == target.num_hidden_layers
    assert (masks["hidden_z"] != 0).sum() == target.hidden_size
    for i in kept_layers:
        assert (masks["head_z"][i] != 0).sum() == target.num_attention_heads
        groups = (masks["head_z"][i].view(source.num_key_value_heads, -1) != 0).any(1)
        assert groups.sum() == target.num_key_value_heads
        assert (masks["intermediate_z"][i] != 0).sum() == target.intermediate_size
    assert plan.method == "sheared" and plan.metadata["target_shape"] == target.to_dict()

    model = LlamaForCausalLM(source).eval()
    randomize_norms(model)
    sliced = slice_model(model, plan).eval()
    input_ids = torch.randint(0, source.vocab_size, (2, 11))
    with torch.no_grad():
        masked_logits = model(input_ids, masks=masks)
        sliced_logits = sliced(input_ids)
    assert masked_logits.abs().max() > 1e-2  # the comparison is not between near-zero tensors
    torch.testing.assert_close(sliced_logits, masked_logits, atol=1e-4, rtol=0)


def kept_with_ties_to_lower_index(values: torch.Tensor, k: int) -> torch.Tensor:
    """[..., n] bool: the k largest of each row, a tie going to the lower index (plain Python sort)."""
    rows = values.reshape(-1, values.shape[-1]).tolist()
    keep = torch.zeros(len(rows), values.shape[-1], dtype=torch.bool)
    for r, row in enumerate(rows):
        keep[r, sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]] = True
    return keep.view(values.shape)


@pytest.mark.parametrize("tie_values", [(4.0,), (-1.0, 0.0, 2.0)])
def test_units_tied_at_the_cut_are_kept_lower_index_first(tie_values):
    """Gates often tie exactly (clamped to the same bound, e.g. all at log(100) from init): the
    deterministic masks and the plan then keep the lower indices, whatever the device or topk does.
    One value everywhere: the first units of every structure; a few values: ties across each cut."""
    source = gqa_config()
    l0 = L0Module(source, GQA_ALL_PRUNED, block_masks=True).eval()
    generator = torch.Generator().manual_seed(0)
    values = torch.tensor(tie_values)
    with torch.no_grad():
        for gate in l0.gates.values():
            gate.log_alpha.copy_(values[torch.randint(len(values), gate.shape, generator=generator)])
    log_alpha = {name: gate.log_alpha.detach() for name, gate in l0.gates.items()}
    target = GQA_ALL_PRUNED
    layers = kept_with_ties_to_lower_index(log_alpha["layer"], target.num_hidden_layers)
    groups = kept_with_ties_to_lower_index(log_alpha["kv_group"], target.num_key_value_heads)
    heads = kept_with_ties_to_lower_index(log_alpha["head"].view(4, 2, 3), target.query_groups).view(4, 6)
    heads &= l0.expand_groups(groups)
    neurons = kept_with_ties_to_lower_index(log_alpha["intermediate"], target.intermediate_size)
    hidden = kept_with_ties_to_lower_index(log_alpha["hidden"], target.hidden_size)
    if len(tie_values) == 1:
        assert layers.tolist() == [True, True, True, False] and hidden[:13].all() and not hidden[13:].any()

    sel = l0.selection()
    for mine, expected in ((sel.layer_keep, layers), (sel.kv_keep, groups), (sel.head_keep, heads),
                           (sel.neuron_keep, neurons), (sel.hidden_keep, hidden)):
        assert torch.equal(mine, expected)
    masks = l0()
    assert torch.equal(masks["layer_z"] != 0, layers)
    assert torch.equal(masks["hidden_z"] != 0, hidden)
    assert torch.equal(masks["head_z"] != 0, heads & layers[:, None])
    assert torch.equal(masks["intermediate_z"] != 0, neurons & layers[:, None])
    plan = l0.make_plan()
    assert [layer.source_index for layer in plan.layers] == layers.nonzero().flatten().tolist()
    assert plan.kept_hidden == hidden.nonzero().flatten().tolist()
    for layer in plan.layers:
        assert layer.kept_heads == heads[layer.source_index].nonzero().flatten().tolist()
        assert layer.kept_neurons == neurons[layer.source_index].nonzero().flatten().tolist()


def test_noise_streams_of_one_seed_are_independent_and_not_part_of_the_state():
    """pruning.per_rank_masks: rank r draws from stream r of the run's seed; stream 0 is the shared
    stream (the seeds it always had), and the stream stays the rank's own across a resume."""
    from llmshearing.sheared.noise import _mix

    def noise(stream: NoiseStream) -> torch.Tensor:
        return torch.rand(8, generator=stream.next_generator(torch.device("cpu")))

    shared, own = NoiseStream(5), NoiseStream(5, stream=1)
    assert not torch.equal(noise(shared), noise(own))
    assert torch.equal(noise(NoiseStream(5, stream=1)), noise(NoiseStream(5, stream=1)))
    before_streams = int(np.random.SeedSequence([5, 3]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    assert _mix(5, 3) == _mix(5, 3, 0) == before_streams != _mix(5, 3, 1)  # old checkpoints resume alike
    assert own.state_dict() == {"seed": 5, "draws": 1}
    resumed = NoiseStream(0, stream=1)
    resumed.load_state_dict(own.state_dict())
    assert torch.equal(noise(resumed), noise(own))


# ---- Lagrangian ----------------------------------------------------------------------------------

@pytest.mark.parametrize("log_alpha", [5.0, -4.0])
def test_lambda_ascends_in_direction_of_constraint_gap(log_alpha):
    l0 = L0Module(gqa_config(), GQA_ALL_PRUNED, init_mean=log_alpha)
    optimizer = torch.optim.SGD(l0.lagrangian_parameters(), lr=0.5)
    loss, _ = l0.lagrangian(step=0)
    loss.backward()
    gaps = {name: (value - l0.target_fractions()[name]).item() for name, value in l0.expected_sizes().items()}
    optimizer.step()
    for name, gap in gaps.items():
        assert abs(gap) > 0.05
        assert l0.lambda_1[name].item() == pytest.approx(0.5 * gap, rel=1e-5)
        assert l0.lambda_2[name].item() == pytest.approx(0.5 * gap ** 2, rel=1e-5)


def test_target_warmup_schedule():
    l0 = L0Module(gqa_config(), GQA_ALL_PRUNED, lagrangian_warmup_steps=10)
    final = l0.target_fractions()
    assert final["layer"] == 0.75 and final["head"] == pytest.approx(2 / 6) and final["hidden"] == 13 / 23
    assert l0.target_fractions(0) == {name: 1.0 for name in final}
    assert l0.target_fractions(5) == pytest.approx({name: (1 + f) / 2 for name, f in final.items()})
    assert l0.target_fractions(10) == pytest.approx(final)
    assert l0.target_fractions(1000) == pytest.approx(final)
    no_warmup = L0Module(gqa_config(), GQA_ALL_PRUNED)
    assert no_warmup.target_fractions(0) == final

    with torch.no_grad():
        for value in l0.lambda_1.values():
            value.fill_(1.0)
    loss, details = l0.lagrangian(step=5)
    gaps = sum(details[f"expected_fraction/{n}"] - details[f"target_fraction/{n}"] for n in l0.structures)
    assert loss.item() == pytest.approx(gaps, abs=1e-5)
    assert details["lagrangian"] == pytest.approx(loss.item())
    assert details["expected_parameters"] == pytest.approx(l0.expected_parameters().item())


def test_optimising_the_lagrangian_reaches_target_fractions():
    torch.manual_seed(0)
    l0 = L0Module(gqa_config(), GQA_ALL_PRUNED)
    optimizer = torch.optim.Adam([{"params": l0.mask_parameters()}, {"params": l0.lagrangian_parameters()}], lr=0.1)
    for step in range(300):
        loss, _ = l0.lagrangian(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        l0.clamp_()
    expected = {name: value.item() for name, value in l0.expected_sizes().items()}
    assert expected == pytest.approx(l0.target_fractions(), abs=0.05)


# ---- validation and checkpoints --------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    shape(24, 6, 2, 4, 37),  # hidden larger than the source
    shape(23, 6, 2, 5, 37),  # more layers
    shape(23, 5, 2, 4, 37),  # 5 heads do not split into 2 KV groups
    shape(23, 4, 1, 4, 37),  # 4 heads in one group but source groups hold 3
])
def test_bad_targets_raise_shape_error(target):
    with pytest.raises(ShapeError):
        L0Module(gqa_config(), target)


def test_extra_state_round_trip_and_mismatch():
    source = gqa_config()
    l0 = L0Module(source, GQA_ALL_PRUNED)
    state = l0.state_dict()
    assert state["_extra_state"]["target_shape"] == GQA_ALL_PRUNED.to_dict()
    assert state["_extra_state"]["pruning_plan"] == l0.make_plan().to_dict()  # every checkpoint carries its plan
    L0Module(source, GQA_ALL_PRUNED).load_state_dict(state)
    written_before_plans = {**state, "_extra_state": {k: v for k, v in state["_extra_state"].items()
                                                      if k != "pruning_plan"}}
    L0Module(source, GQA_ALL_PRUNED).load_state_dict(written_before_plans)
    other_target = shape(13, 2, 1, 2, 21)
    with pytest.raises(CheckpointError):
        L0Module(source, other_target).load_state_dict(state)
    other_source = gqa_config(tied=True)
    with pytest.raises(CheckpointError):
        L0Module(other_source, GQA_ALL_PRUNED).load_state_dict(state)


# ---- convergence at the end of pruning -----------------------------------------------------------
def test_untrained_masks_are_reported_behind_the_target_with_every_cut_unit_still_open():
    source = gqa_config()
    plan = L0Module(source, GQA_ALL_PRUNED).make_plan()  # log_alpha 5: every gate open
    report = {entry["structure"]: entry for entry in plan.metadata["mask_convergence"]}
    assert set(report) == {"layer", "kv_group", "head", "intermediate", "hidden"}
    layers, neurons = report["layer"], report["intermediate"]
    assert layers["expected_fraction"] == pytest.approx(1.0, abs=1e-2)
    assert layers["target_fraction"] == pytest.approx(3 / source.num_hidden_layers)
    assert layers["cut"] == layers["cut_while_open"] == source.num_hidden_layers - 3
    assert neurons["cut"] == neurons["cut_while_open"] == source.num_hidden_layers * (source.intermediate_size - 21)
    # heads of the one kept KV group: 3 -> 2 per layer
    assert report["head"]["cut"] == source.num_hidden_layers * 1
    warning = plan.warning()
    assert warning.startswith("the masks had not reached the target shape when pruning ended: layer at 1.00")
    assert "prune for more steps" in warning


def test_masks_that_reached_the_target_give_no_warning():
    from llmshearing.sheared.convergence import mask_convergence

    l0 = L0Module(gqa_config(), GQA_ALL_PRUNED)
    set_binary_gates(l0)
    report = mask_convergence(l0)
    assert all(entry.cut_while_open == 0 and entry.cut > 0 for entry in report)
    assert all(entry.expected_fraction == pytest.approx(entry.target_fraction, abs=1e-3) for entry in report)
    assert l0.make_plan().warning() is None


def test_masks_that_shut_more_than_the_target_are_reported_with_the_kept_shut_units():
    source = gqa_config()
    l0 = L0Module(source, GQA_ALL_PRUNED)
    set_binary_gates(l0)
    with torch.no_grad():
        l0.gates["intermediate"].log_alpha[:, :] = -BIG  # every neuron shut; the plan still keeps 21 per layer
    report = {entry["structure"]: entry for entry in l0.make_plan().metadata["mask_convergence"]}
    assert report["intermediate"]["kept_while_shut"] == source.num_hidden_layers * 21
    assert report["head"]["kept_while_shut"] == 0
    warning = l0.make_plan().warning()
    assert warning.startswith("the masks shut more than the target when pruning ended: intermediate at 0.00")
    assert "lower pruning.lag_lr" in warning


def test_the_quadratic_term_pulls_each_layer_to_the_target_not_only_their_mean():
    """Half the layers fully open, half shut: the mean fraction of neurons is on target (0.5), so
    only the per-layer quadratic term is non-zero; its gradient shuts the open layers' gates and
    opens the shut ones' (the plan keeps the same count in every layer)."""
    source = gqa_config()
    half = source.intermediate_size // 2
    l0 = L0Module(source, shape(source.hidden_size, source.num_attention_heads, source.num_key_value_heads,
                                source.num_hidden_layers, half))
    open_layers = torch.arange(source.num_hidden_layers) % 2 == 0
    with torch.no_grad():
        gate = l0.gates["intermediate"].log_alpha
        gate.copy_(torch.where(open_layers[:, None], torch.full_like(gate, BIG), torch.full_like(gate, -BIG)))
        gate[:, 0] = 0.0  # a gate with a gradient in every layer (±BIG saturates the keep probability)
        l0.lambda_2["intermediate"].fill_(1.0)
    rows = l0.expected_row_fractions()["intermediate"]
    assert l0.expected_sizes()["intermediate"].item() == pytest.approx(rows.mean().item())
    loss, details = l0.lagrangian(step=0)
    assert loss.item() > 0.2  # ≈ mean((1 - 0.5)², (0 - 0.5)²) = 0.25
    loss.backward()
    grad = l0.gates["intermediate"].log_alpha.grad[:, 0]
    assert (grad[open_layers] > 0).all() and (grad[~open_layers] < 0).all()  # descent: open ones shut, shut ones open
