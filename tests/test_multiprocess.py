"""Multi-process training: `composer -n 2` (gloo, DDP, FSDP1 and FSDP2 on CPU) for pruning, CPT and KD.

Tolerance of "two processes train like one": both runs compute the same sums (same global batch,
same mask samples on every rank, DDP averages the gradients exactly as one process averages its
loss); they differ only in the float32 order of the reductions (~1e-7 relative), which a few Adam
steps amplify to ~2e-6 (observed). We allow 1e-4, relative for losses and absolute for masks/λ.
Across ranks the replicated values must be bit-identical: every rank applies the same all-reduced
gradient to the same broadcast start.

The two-rank trainings (DDP, FSDP1, FSDP2 for each kind, and pruning with per-rank masks) run one
after another in one `composer -n 2` launch (tests/multiprocess_probe.py --runs), their one-process
references in one more, the FSDP resumptions in a third: a tiny run's time is mostly start-up.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmshearing.composer.distributed import ReplicaSync
from tests.multiprocess_probe import launch, launch_runs
from tests.test_distillation import KD_YAML, teacher_and_student  # noqa: F401  (fixture)
from tests.test_dynamic_loading import REPO, TINY, _free_port

TOLERANCE = 1e-4
# log_alpha under Adam: each gate's step is its gradient over its own running magnitude, so a gate whose
# loss and Lagrangian gradients nearly cancel carries the all-reduce's rounding into its step (measured:
# 3.4e-4 on the neuron gates, 1e-5 on the others; mask_lr is 0.3 per step, the tolerance 0.3 % of one)
GATE_TOLERANCE = 1e-3
# a few steps, no evaluation, no checkpoints: the runs differ only in the number of processes
SHORT = ["max_duration=4ba", "eval_interval=100ba", "console_log_interval=100ba", "save_folder=null"]
RUNS = {
    "prune": [],
    "cpt": ["pruning=null"],
    "kd": ["data.seq_len=32", "precision=fp32", "teacher.hidden_weight=1.0", "teacher.hidden_layers=[0,-1]",
           "scheduler.t_warmup=0ba"],
}


def run_overrides(kind: str, corpus: Path, models) -> tuple:
    if kind != "kd":
        return TINY, [f"data.path={corpus}", *SHORT, *RUNS[kind]]
    teacher, student = models
    return KD_YAML, [f"data.path={corpus}", f"model.path={student}", f"teacher.path={teacher}", *SHORT, *RUNS[kind]]


FSDP = ["model.gradient_checkpointing=false", "fsdp={sharding_strategy: FULL_SHARD, mixed_precision: DEFAULT, "
        "activation_checkpointing: true, state_dict_type: full}"]
CPU_RANKS = {"OMP_NUM_THREADS": "1"}  # two ranks on two cores: one thread each (else 4-5x slower)


STRATEGIES = {"ddp": ([], {}), "fsdp": (FSDP, {"FSDP_VERSION": "1"}), "fsdp2": (FSDP, {"FSDP_VERSION": "2"})}
# the prune runs under FSDP also save (full state dict, every 2 batches): they are the uninterrupted runs
# the FSDP checkpoint test resumes from (saving changes nothing in the training they are compared on)
CHECKPOINTED = ["save_interval=2ba"]


@pytest.fixture(scope="module")
def runs(sample_corpus, teacher_and_student, tmp_path_factory):  # noqa: F811
    """Every training the "train like one" and FSDP checkpoint tests compare, in two launches: the
    three kinds in one process, then their DDP / FSDP1 / FSDP2 runs one after another on two ranks
    (each run its own Trainer, seeds and loaders; one start-up of the launcher, Python, torch and
    Composer for all, which is most of a tiny run's time)."""
    root = tmp_path_factory.mktemp("runs")
    single, multi = [], []
    for kind in RUNS:
        yaml, overrides = run_overrides(kind, sample_corpus, teacher_and_student)
        single.append({"out": root / "one" / kind, "config": yaml, "overrides": overrides})
        for strategy, (extra, env) in STRATEGIES.items():
            saving = [f"save_folder={root / 'saved' / strategy}", *CHECKPOINTED] if kind == "prune" and extra else []
            multi.append({"out": root / strategy / kind, "config": yaml, "overrides": [*overrides, *extra, *saving],
                          "env": env})
    # the prune DDP run again with pruning.per_rank_masks (the per-rank mask test)
    _, overrides = run_overrides("prune", sample_corpus, teacher_and_student)
    multi.append({"out": root / "ddp" / "per_rank_masks", "config": TINY,
                  "overrides": [*overrides, "pruning.per_rank_masks=true"]})
    records = {("one", kind): ranks for kind, ranks in zip(RUNS, launch_runs(single, processes=1))}
    records.update(zip([*((strategy, kind) for kind in RUNS for strategy in STRATEGIES), ("ddp", "per_rank_masks")],
                       launch_runs(multi, processes=2, env=CPU_RANKS)))
    return root, records


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["prune", "cpt", "kd"])
def test_two_processes_train_like_one_with_the_same_global_batch(kind, runs):
    """DDP and FSDP (FULL_SHARD, per-layer units, activation checkpointing) on two CPU processes."""
    _, records = runs
    (single,) = records["one", kind]
    ddp, fsdp, fsdp2 = (records[strategy, kind] for strategy in STRATEGIES)
    expected = {"prune": "l0.lambda_1.hidden", "cpt": None, "kd": "distill_projection.maps.0.weight"}[kind]
    layers = 3 if kind == "kd" else 4
    assert fsdp[0]["fsdp_units"] == {"student": layers + 1, "teacher": 5 if kind == "kd" else 0}  # root + layers
    assert fsdp2[0]["fsdp_units"] == fsdp[0]["fsdp_units"]  # FSDP2 student, FSDP1 teacher
    assert [run[0]["fsdp2"] for run in (ddp, fsdp, fsdp2)] == [False, False, True]  # each run's FSDP_VERSION
    assert ddp[0]["fsdp_units"] == {"student": 0, "teacher": 0}
    if kind == "kd":  # under FSDP only rank 0 reads the teacher; the others get its weights by broadcast
        assert [r["read_teacher_files"] for r in ddp + fsdp] == [True, True, True, False]
    for rank0, rank1 in (ddp, fsdp, fsdp2):
        assert rank0["world_size"] == 2 and len(single["losses"]) == len(rank0["losses"]) == 4
        # every rank ends with the same masks, λ and projections (whole under FSDP, not a shard)
        assert rank0["replicated"] == rank1["replicated"]
        assert expected is None or expected in rank0["replicated"]
        # ... and trains like one process with the same global batch
        for one, two in zip(single["losses"], rank0["losses"]):
            assert one.keys() == two.keys()
            assert all(abs(one[k] - two[k]) <= TOLERANCE * max(1.0, abs(one[k])) for k in one), (one, two)
        for name, values in single["replicated"].items():
            assert len(values) == len(rank0["replicated"][name]), name
            tolerance = GATE_TOLERANCE if name.endswith("log_alpha") else TOLERANCE
            assert max(abs(a - b) for a, b in zip(values, rank0["replicated"][name])) <= tolerance, name
    assert ddp[0]["model"] == ddp[1]["model"]  # DDP: whole identical students (FSDP ranks hold shards)


@pytest.mark.slow
def test_each_rank_samples_its_own_masks_only_with_per_rank_masks(runs):
    """pruning.per_rank_masks on two CPU ranks (DDP): each rank samples its own L0 masks, or all the same."""
    _, records = runs
    shared, own = records["ddp", "prune"], records["ddp", "per_rank_masks"]
    for run in (shared, own):
        assert [len(rank["masks"]) for rank in run] == [4, 4] and len(run[0]["losses"]) == 4
        assert all(value == value for step in run[0]["losses"] for value in step.values())  # no NaN
        # DDP still keeps log_alpha and λ identical on the ranks
        assert run[0]["replicated"] == run[1]["replicated"] and "l0.gates.hidden.log_alpha" in run[0]["replicated"]
    assert shared[0]["masks"] == shared[1]["masks"]
    assert all(a != b for a, b in zip(own[0]["masks"], own[1]["masks"]))
    # rank 0 keeps the shared stream: the same first sample (later ones differ with log_alpha)
    assert own[0]["masks"][0] == shared[0]["masks"][0]


@pytest.fixture(scope="module")
def resumed(runs, sample_corpus):
    """The prune FSDP1 / FSDP2 runs resumed from their batch-2 checkpoints, in a new launch (fresh
    processes: nothing but the checkpoint carries the state over), both versions one after another."""
    root, _ = runs
    _, overrides = run_overrides("prune", sample_corpus, None)
    plan = [{"out": root / "resumed" / strategy, "config": TINY,
             "overrides": [*overrides, *FSDP, *CHECKPOINTED, f"save_folder={root / 'resaved' / strategy}",
                           f"load_path={root / 'saved' / strategy / 'ep0-ba2-rank0.pt'}"],
             "env": STRATEGIES[strategy][1]} for strategy in ("fsdp", "fsdp2")]
    return dict(zip(("fsdp", "fsdp2"), launch_runs(plan, processes=2, env=CPU_RANKS)))


@pytest.mark.slow
@pytest.mark.parametrize("version", ["1", "2"])
def test_an_fsdp_checkpoint_holds_whole_tensors_resumes_exactly_and_exports(runs, resumed, tmp_path, version):
    """FULL_SHARD with a full state dict: FSDP units (the layers) and the L0 module kept out of
    FSDP are saved whole by rank 0, loaded back into shards and replicas, and sliced by convert."""
    from transformers import AutoModelForCausalLM

    from llmshearing.convert.cli import main as convert_main
    from tests.test_resume import assert_identical, training_state

    strategy = {"1": "fsdp", "2": "fsdp2"}[version]
    root, records = runs
    whole, again = records[strategy, "prune"], resumed[strategy]
    assert again[0]["losses"] == whole[0]["losses"][2:] and again[0]["replicated"] == whole[0]["replicated"]
    final = root / "saved" / strategy / "ep0-ba4-rank0.pt"
    assert_identical(training_state(root / "resaved" / strategy / "ep0-ba4-rank0.pt"), training_state(final))
    model_state = torch.load(final, map_location="cpu", weights_only=False)["state"]["model"]
    assert model_state["model.model.layers.0.mlp.up_proj.weight"].shape == (96, 48)  # whole, not a shard
    assert model_state["l0.gates.intermediate.log_alpha"].numel() == 4 * 96
    assert "pruning_plan" in model_state["l0._extra_state"]  # the plan export slices with
    out = tmp_path / "hf"
    assert convert_main(["composer-to-hf", str(final), str(out), "--prune"]) == 0
    config = AutoModelForCausalLM.from_pretrained(out).config
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (32, 40, 3)


def _sync_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as torch_dist

    torch_dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    module = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for param in module.parameters():
            param.fill_(float(rank + 1))
            param.grad = torch.full_like(param, 10.0 * (rank + 1))
    sync = ReplicaSync(module)
    sync.broadcast_from_rank_zero()
    sync.average_gradients()
    torch.save({n: (p.detach(), p.grad) for n, p in module.named_parameters()}, f"{out}/rank{rank}.pt")
    torch_dist.destroy_process_group()


def test_replica_sync_broadcasts_rank_zero_and_averages_gradients(tmp_path):
    torch.multiprocessing.spawn(_sync_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name in ranks[0]:
        (value0, grad0), (value1, grad1) = ranks[0][name], ranks[1][name]
        assert torch.equal(value0, value1) and torch.all(value0 == 1.0)
        assert torch.equal(grad0, grad1) and torch.all(grad0 == 15.0)


# --- FSDP: what Composer wraps, seen through a recorder in one process ---

class RecordedFSDP:
    """Stands in for FullyShardedDataParallel in Composer's prepare_fsdp_module; records the units."""

    wrapped: dict = {}

    def __new__(cls, module, auto_wrap_policy=None, sharding_strategy=None, **kwargs):
        units = auto_wrap_policy._run_policy(module, set(), {})
        cls.wrapped[module] = {"units": [m for m in units if m is not module], "strategy": sharding_strategy}
        return module


def test_fsdp_wraps_each_decoder_layer_and_leaves_masks_and_lambda_replicated(monkeypatch):
    from composer.distributed import dist_strategy
    from composer.utils.parallelism import FSDPConfig
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    from llmshearing.composer.distributed import attach_replicated
    from llmshearing.model.composer_model import ComposerLlama
    from llmshearing.model.llama import DecoderLayer
    from llmshearing.shape import TargetShape
    from llmshearing.sheared.l0_module import L0Module
    from tests.helpers import tiny_config

    monkeypatch.setattr(dist_strategy, "FullyShardedDataParallel", RecordedFSDP)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    RecordedFSDP.wrapped = {}
    model = ComposerLlama(tiny_config())
    l0 = L0Module(model.config, TargetShape.from_mapping({"hidden_size": 40}, model.config))
    state = type("State", (), {"model": model, "device": dist_strategy.get_device("cpu")})()
    attach_replicated(state, "l0", l0)
    optimizer = torch.optim.AdamW(model.model.parameters(), lr=1e-3)
    optimizer.add_param_group({"params": list(l0.mask_parameters()), "lr": 0.3})
    optimizer.add_param_group({"params": list(l0.lagrangian_parameters()), "lr": 0.5})
    config = FSDPConfig(sharding_strategy="FULL_SHARD", activation_checkpointing=True)
    with pytest.warns(UserWarning, match="_exec_order_data"):
        dist_strategy.prepare_fsdp_module(model, optimizer, config, precision="fp32", device="cpu")

    assert list(RecordedFSDP.wrapped) == [model.model]  # the masks / λ are no FSDP unit: never sharded
    units = RecordedFSDP.wrapped[model.model]["units"]
    assert len(units) == 3 and all(isinstance(unit, DecoderLayer) for unit in units)
    checkpointed = [m for m in model.model.modules() if isinstance(m, CheckpointWrapper)]
    assert [m._checkpoint_wrapped_module for m in checkpointed] == units
    # Composer rebuilt the optimizer groups: the masks and λ keep their own learning rates
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 0.3, 0.5]
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {id(p) for p in l0.mask_parameters()}


def test_fsdp_settings_that_cannot_run_fail_with_one_line(sample_corpus):
    from llmshearing.config import load_config
    from llmshearing.errors import ConfigError
    from llmshearing.training import check_parallelism, fsdp_settings

    both = load_config(REPO / "yamls" / "prune_2.7b.yaml", ["model.gradient_checkpointing=true", "device=gpu"])
    with pytest.raises(ConfigError, match="both checkpoint every decoder layer"):
        check_parallelism(both)
    reentrant = load_config(TINY, ["fsdp={sharding_strategy: FULL_SHARD, activation_checkpointing_reentrant: true}"])
    with pytest.raises(ConfigError, match="cannot back-propagate into the masks"):
        check_parallelism(reentrant)
    assert fsdp_settings(load_config(TINY, ["fsdp={activation_checkpointing: true}"])) == {
        "activation_checkpointing": True, "activation_checkpointing_reentrant": False}


@pytest.mark.parametrize("name", ["prune_2.7b", "prune_1.3b", "prune_llama3.1_8b_to_4b", "prune_qwen3_8b_to_4b",
                                  "prune_gemma3_12b_to_4b",
                                  "continue_pretrain_2.7b",
                                  "continue_pretrain_1.3b", "minitron_kd_llama3.1_8b_to_4b"])
def test_paper_scale_yamls_shard_with_fsdp(name):
    from llmshearing.config import load_config
    from llmshearing.training import check_parallelism

    cfg = load_config(REPO / "yamls" / f"{name}.yaml", ["device=gpu"])
    assert cfg.precision == "amp_bf16" and not cfg.model.gradient_checkpointing
    assert {k: cfg.fsdp[k] for k in ("sharding_strategy", "mixed_precision", "activation_checkpointing")} == \
        {"sharding_strategy": "FULL_SHARD", "mixed_precision": "DEFAULT", "activation_checkpointing": True}
    check_parallelism(cfg)
    if name.startswith("minitron"):  # REFERENCE.md §2 / Llama-3.1-Minitron-4B: logit KL at T = 1, ~94B tokens
        assert (cfg.teacher.temperature, cfg.teacher.alpha, cfg.teacher.dtype) == (1.0, 0.0, "bfloat16")
        tokens = int(cfg.max_duration.rstrip("ba")) * cfg.global_train_batch_size * cfg.data.seq_len
        assert 93e9 < tokens < 95e9


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["prune", "kd"])
def test_fsdp_on_one_gpu_keeps_masks_whole_and_shards_the_teacher(
        kind, sample_corpus, teacher_and_student, tmp_path):  # noqa: F811
    yaml, overrides = run_overrides(kind, sample_corpus, teacher_and_student)
    fsdp = ["device=gpu", "precision=amp_bf16", "model.gradient_checkpointing=false",
            "fsdp={sharding_strategy: FULL_SHARD, mixed_precision: DEFAULT, activation_checkpointing: true}"]
    (sharded,) = launch(tmp_path / "fsdp", yaml, [*overrides, *fsdp], processes=1)
    (plain,) = launch(tmp_path / "plain", yaml, [*overrides, "device=gpu", "precision=amp_bf16"], processes=1)
    layers = 4 if kind == "prune" else 3
    assert sharded["fsdp_units"]["student"] == layers + 1  # the model's root unit + one per decoder layer
    assert sharded["fsdp_units"]["teacher"] == (5 if kind == "kd" else 0)
    assert sharded["replicated"].keys() == plain["replicated"].keys()
    for name, values in plain["replicated"].items():
        assert len(sharded["replicated"][name]) == len(values), name  # whole, not a shard
    for one, two in zip(plain["losses"], sharded["losses"]):  # bf16 autocast in both: same maths, other kernels
        assert abs(one["loss/train/total"] - two["loss/train/total"]) <= 2e-2 * abs(one["loss/train/total"])
