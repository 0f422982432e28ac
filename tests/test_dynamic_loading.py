"""Dynamic batch loading: sampler, update rule, workers/ranks, checkpoint state, end-to-end runs."""
from __future__ import annotations

import itertools
import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from llmshearing.config import load_config
from llmshearing.data.corpus import CorpusError
from llmshearing.dynamic_loading.loader import build_dynamic_train_dataloader
from llmshearing.dynamic_loading.mixture_sampler import MixtureCursor, MixtureSampler
from llmshearing.dynamic_loading.mixture_update import MixtureUpdate
from llmshearing.dynamic_loading.permutation import permuted, stream_key
from llmshearing.errors import ConfigError
from tests.dynamic_loader_probe import draw

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "yamls" / "tiny_prune.yaml"
SEQ_LEN = 32
# A tiny-model continued pre-training run with dynamic loading (tiny_prune.yaml without pruning).
TINY_CPT = ["pruning=null", "console_log_interval=100ba", "eval_interval=100ba", "data.num_workers=2"]


def refs(domains, value=9.0, **special):
    """A dot-list value for dynamic_loading.reference_losses."""
    return "{" + ", ".join(f"{d}: {special.get(d, value)}" for d in domains) + "}"


def loader(corpus, domains, proportions=None, batch=16, interval=None, workers=0, max_steps=1000, **kw):
    return build_dynamic_train_dataloader(corpus, domains, proportions, batch, SEQ_LEN, seed=11,
                                          update_interval=interval, max_steps=max_steps,
                                          num_workers=workers, **kw)


@pytest.fixture(scope="module")
def domains(sample_corpus):
    return json.loads((sample_corpus / "manifest.json").read_text())["domains"]


# --- sampler and update rule ---------------------------------------------------------------------

@pytest.mark.parametrize("size", [1, 2, 3, 17, 312, 4097])
def test_permutation_is_a_bijection_and_depends_on_the_key(size):
    first = permuted(np.arange(size), size, stream_key(1, 0, 1))
    assert sorted(first.tolist()) == list(range(size))
    if size > 16:
        assert first.tolist() != permuted(np.arange(size), size, stream_key(1, 0, 2)).tolist()


def test_each_pass_over_a_domain_is_a_new_shuffle_of_all_its_samples():
    sampler = MixtureSampler(seed=4, domain_sizes=[7, 50], global_batch_size=10)
    draws = np.arange(150)
    indices = sampler.sample_indices(np.ones(150, dtype=np.int64), draws)
    passes = [indices[i:i + 50].tolist() for i in range(0, 150, 50)]
    assert all(sorted(p) == list(range(50)) for p in passes)
    assert passes[0] != passes[1] != passes[2]


def test_update_rule_matches_hand_computed_numbers():
    rule = MixtureUpdate(np.array([2.0, 1.0, 3.0]), eta=1.0, smoothing=1e-4)
    # Δ = max(ℓ - ℓref, 0) = [0.5, 0, 0] (the third domain is below its reference: clamped, not rewarded)
    # α ∝ [0.5 e^0.5, 0.3, 0.2] = [0.824361, 0.3, 0.2] / 1.324361; w = (1 - 1e-4) α + 1e-4 / 3
    expected = [0.622431, 0.226535, 0.151035]
    assert np.allclose(rule([0.5, 0.3, 0.2], [2.5, 0.5, 2.0]), expected, atol=2e-6)
    assert np.allclose(rule.excess_losses([2.5, 0.5, float("nan")]), [0.5, 0.0, 0.0])
    no_smoothing = MixtureUpdate(np.array([1.0, 1.0]), eta=2.0, smoothing=0.0)
    e = math.exp(2.0 * 0.25)
    assert np.allclose(no_smoothing([0.5, 0.5], [1.25, 1.0]), [e / (e + 1), 1 / (e + 1)])


def test_per_sample_loss_sums_add_up_to_the_models_mean_loss():
    from llmshearing.dynamic_loading.domain_loss import sample_token_losses
    from llmshearing.model.composer_model import ComposerLlama
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    model = ComposerLlama(tiny_config())
    batch = {"input_ids": torch.randint(0, 97, (3, 12))}
    logits = model(batch)
    sums, counts = sample_token_losses(logits, batch)
    assert counts.tolist() == [11, 11, 11]
    assert torch.allclose(sums.sum() / counts.sum(), model.loss(logits, batch).double(), atol=1e-6)


def test_max_repeats_stops_drawing_a_used_up_domain():
    sampler = MixtureSampler(seed=0, domain_sizes=[3, 1000], global_batch_size=4, max_repeats=1)
    cursor = MixtureCursor.start(2)
    for _ in range(50):
        sampler.advance(cursor, sampler.draw(cursor, np.array([0.9, 0.1])))
    assert 6 <= cursor.drawn[0] < 6 + 4  # two passes of 3, overshooting by less than one batch


# --- the loader ----------------------------------------------------------------------------------

def test_sampled_proportions_match_the_weights_with_workers(sample_corpus, domains):
    weights = [0.4, 0.25, 0.15, 0.12, 0.08]
    batches = list(itertools.islice(loader(sample_corpus, domains, weights, workers=2), 250))
    drawn = Counter(d for batch in batches for d in batch["domain"].tolist())
    total = sum(drawn.values())
    assert total == 4000 and all(batch["input_ids"].shape == (16, SEQ_LEN) for batch in batches)
    for index, weight in enumerate(weights):
        # each domain is drawn i.i.d. with probability `weight`: allow 4.5 binomial standard deviations
        tolerance = 4.5 * math.sqrt(weight * (1 - weight) / total)
        assert abs(drawn[index] / total - weight) <= tolerance, (domains[index], drawn[index] / total, weight)


def test_new_weights_reach_prefetching_workers_exactly_at_the_update_step(sample_corpus, domains):
    initial = list(itertools.islice(loader(sample_corpus, domains, interval=5), 5))
    data = loader(sample_corpus, domains, interval=5, workers=2)
    batches = iter(data)
    before = [next(batches) for _ in range(5)]
    data.dataset.publish_weights(5, [0.0, 0.0, 1.0, 0.0, 0.0])
    after = [next(batches) for _ in range(5)]
    data.dataset.close()  # the prefetching workers wait for window 2 (step 10): release them
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(initial, before))
    assert all(set(batch["domain"].tolist()) == {2} for batch in after)
    assert len({d for batch in before for d in batch["domain"].tolist()}) > 1


def test_a_small_domain_is_reshuffled_and_repeated_with_a_warning(sample_corpus, domains):
    size = json.loads((sample_corpus / "manifest.json").read_text())["per_domain"][domains[0]]["train"]["samples"]
    data = iter(loader(sample_corpus, domains[:1], batch=8))
    with pytest.warns(UserWarning, match=rf"'{domains[0]}' ran out of its {size} samples .* repeated 1 time"):
        rows = [row.numpy().tobytes() for batch in itertools.islice(data, math.ceil(2 * size / 8) + 1)
                for row in batch["input_ids"]]
    first, second = rows[:size], rows[size:2 * size]
    assert len(set(first)) == size and set(first) == set(second) and first != second


def test_loader_state_is_small_and_does_not_grow_with_steps(sample_corpus, domains):
    dataset = loader(sample_corpus, domains, interval=10, max_steps=5000).dataset
    shapes = []
    for step in (1, 10, 3000):
        while dataset.table.window_of(step) >= int(dataset.table._published[0]):
            window = int(dataset.table._published[0])
            dataset.publish_weights(window * 10, np.random.default_rng(window).dirichlet(np.ones(5)))
        state = dataset.state_dict(step * 16, True)
        assert all(len(state[key]) == len(domains) for key in ("drawn", "weights", "domains"))
        assert sum(state["drawn"]) == step * 16
        assert len(json.dumps(state)) < 512
        shapes.append({key: len(value) if isinstance(value, list) else None for key, value in state.items()})
    assert shapes[0] == shapes[1] == shapes[2]


def test_state_round_trip_continues_the_same_sample_sequence(sample_corpus, domains):
    whole = [b["input_ids"] for b in itertools.islice(loader(sample_corpus, domains, workers=2), 12)]
    first = loader(sample_corpus, domains)
    list(itertools.islice(first, 7))
    resumed = loader(sample_corpus, domains, workers=2)
    resumed.dataset.load_state_dict(first.dataset.state_dict(7 * 16, True))
    rest = [b["input_ids"] for b in itertools.islice(resumed, 5)]
    assert all(torch.equal(a, b) for a, b in zip(whole[7:], rest))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_draw_disjoint_shares_of_the_same_global_batches(sample_corpus, tmp_path):
    env = dict(os.environ, WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", NODE_RANK="0",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    ranks = [subprocess.Popen([sys.executable, str(REPO / "tests" / "dynamic_loader_probe.py"),
                               str(tmp_path / f"rank{rank}.json"), str(sample_corpus), "16", "30", "2"],
                              env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    for process in ranks:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    single = draw(str(sample_corpus), 16, 30, 0)
    assert all(len(a) == len(b) == 8 for a, b in zip(rank0, rank1))
    assert [a + b for a, b in zip(rank0, rank1)] == single  # the one-rank global batches, split in two
    hashes0, hashes1 = ({h for batch in r for _, h in batch} for r in (rank0, rank1))
    assert len(hashes0) == 240 and len(hashes1) == 240 and not hashes0 & hashes1


def test_ranks_score_different_eval_samples_for_the_loss(sample_corpus, domains, monkeypatch):
    from llmshearing.dynamic_loading.from_config import rank_eval_loaders

    cfg = load_config(TINY, [f"data.path={sample_corpus}", "device_eval_batch_size=20"])
    size = json.loads((sample_corpus / "manifest.json").read_text())["per_domain"][domains[0]]["eval"]["samples"]
    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        (share,) = rank_eval_loaders(cfg, domains[:1], batches=2)
        shares.append([row.numpy().tobytes() for batch in share for row in batch["input_ids"]])
    assert len(shares[0]) == len(shares[1]) == 40
    assert len(set(shares[0] + shares[1])) == min(80, size)  # disjoint until the split wraps around


def test_a_remote_corpus_is_mirrored_and_its_train_shards_streamed_on_demand(sample_corpus, domains, tmp_path):
    from llmshearing.data.loaders import build_train_dataloader
    from llmshearing.data.remote import mirror_corpus

    cache, remote = tmp_path / "cache", str(sample_corpus)  # a directory works as a "remote" for streaming
    mirror_corpus(remote, cache)
    first = cache / domains[0]
    assert (cache / "manifest.json").is_file() and (first / "train" / "index.json").is_file()
    assert {p.name for p in (first / "eval").rglob("*.mds")} == {p.name for p in (sample_corpus / domains[0] / "eval").rglob("*.mds")}
    assert not list(first.glob("train/**/*.mds"))
    local = list(itertools.islice(loader(sample_corpus, domains), 4))
    streamed = list(itertools.islice(loader(cache, domains, remote=remote), 4))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(local, streamed))
    assert list(first.glob("train/**/*.mds"))
    assert next(iter(build_train_dataloader(cache, domains, None, 4, SEQ_LEN, 0, remote=remote)))["input_ids"].shape == (4, SEQ_LEN)
    with pytest.raises(CorpusError, match=f"cannot fetch {tmp_path / 'nowhere'}/manifest.json"):
        mirror_corpus(str(tmp_path / "nowhere"), tmp_path / "other")


# --- shipped yamls --------------------------------------------------------------------------------

PAPER_REFERENCES = {  # REFERENCE.md §1: scaling-law targets (cc, github, book, se, wiki, arxiv, c4)
    "2.7b": [1.8712, 0.6883, 2.0325, 1.5353, 1.6297, 1.3560, 2.0328],
    "1.3b": [1.9643, 0.7459, 2.1393, 1.6117, 1.7590, 1.4449, 2.1251],
}


@pytest.mark.parametrize("size", ["2.7b", "1.3b"])
def test_paper_yamls_use_the_papers_dynamic_loading(size):
    for stage, interval in (("prune", 50), ("continue_pretrain", 400)):
        cfg = load_config(REPO / "yamls" / f"{stage}_{size}.yaml")
        section = cfg.dynamic_loading
        assert cfg.data.domains == ["cc", "github", "book", "stackexchange", "wiki", "arxiv", "c4"]
        assert cfg.data.proportions == [0.67, 0.045, 0.045, 0.02, 0.045, 0.025, 0.15]
        assert (section.mode, section.update_interval, section.eta, section.smoothing) == ("dynamic", interval, 1.0, 1e-4)
        rule = MixtureUpdate.for_domains(cfg.data.domains, section.reference_losses, section.eta, section.smoothing)
        assert rule.reference_losses.tolist() == PAPER_REFERENCES[size]
    cpt = load_config(REPO / "yamls" / f"continue_pretrain_{size}.yaml")
    assert (cpt.max_duration, cpt.global_train_batch_size, cpt.data.seq_len, cpt.optimizer.lr) == ("48000ba", 256, 4096, 1e-4)
    assert cpt.pruning is None and cpt.scheduler.name == "cosine" and cpt.scheduler.t_warmup == "0.03dur"


def test_demo_yamls_read_the_reference_loss_file():
    for name in ("demo_smollm2_prune", "demo_smollm2_cpt"):
        section = load_config(REPO / "yamls" / f"{name}.yaml").dynamic_loading
        assert section.reference_losses_file == "demo_out/reference_losses.json" and not section.reference_losses


@pytest.mark.slow
def test_two_rank_composer_run_shares_one_mixture(two_rank_train_run):
    """`composer -n 2` on CPU (gloo, DDP): per-rank eval shares reduced, one set of weights (the run in
    conftest.py, through `llmshearing train`, shared with test_cli_main.py)."""
    result, folder = two_rank_train_run
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(folder / "latest-rank0.pt", weights_only=False)["state"]
    assert sum(state["dataset_state"]["train"]["drawn"]) == 8 * 4  # global batches: both ranks' shares
    history = state["callbacks"]["DynamicBatchLoading"]
    assert history["history_steps"] == [0, 4, 8] and history["history_weights"][-1][0] > 0.9


# --- bad input -----------------------------------------------------------------------------------

def _callback(sample_corpus, *overrides):
    from llmshearing.dynamic_loading.from_config import dynamic_loading_callback, dynamic_train_loader

    cfg = load_config(TINY, [f"data.path={sample_corpus}", *TINY_CPT, *overrides])
    domains = cfg.data.domains or json.loads((sample_corpus / "manifest.json").read_text())["domains"]
    dynamic_train_loader(cfg, domains, cfg.data.proportions)
    return dynamic_loading_callback(cfg, domains)


@pytest.mark.parametrize("overrides, message", [
    (["dynamic_loading.reference_losses={prose: 1.0, poetry: 2.0}"], "another set of domains"),
    (["dynamic_loading.update_interval=5"], "needs reference losses"),
    (["dynamic_loading.reference_losses_file=/nonexistent/refs.json"], "/nonexistent/refs.json"),
    (["dynamic_loading.mode=adaptive"], "mode must be one of"),
    (["dynamic_loading.mode=static", "max_duration=2ep"], "max_duration in batches"),
    (["dynamic_loading.mode=static", "data.proportions=[0.5,-0.1,0.2,0.2,0.2]"], "non-negative"),
])
def test_bad_dynamic_loading_settings_fail_before_training(sample_corpus, overrides, message):
    with pytest.raises(ConfigError, match=message):
        _callback(sample_corpus, *overrides)


def test_proportions_not_summing_to_one_are_normalised_with_a_warning(sample_corpus, domains):
    with pytest.warns(UserWarning, match="normalising"):
        data = loader(sample_corpus, domains, [2, 2, 2, 2, 2])
    assert np.allclose(data.dataset.current_weights(0), 0.2)


def test_missing_shard_is_named(sample_corpus, domains, tmp_path):
    import shutil

    corpus = Path(shutil.copytree(sample_corpus, tmp_path / "corpus"))
    shard = sorted((corpus / domains[3] / "train").rglob("*.mds"))[0]
    shard.unlink()
    with pytest.raises(CorpusError, match=f"missing shard file {shard}"):
        loader(corpus, domains)


def test_a_static_mixture_checkpoint_state_is_rejected(sample_corpus, domains):
    dataset = loader(sample_corpus, domains).dataset
    with pytest.raises(ConfigError, match="not written by dynamic loading"):
        dataset.load_state_dict({"epoch": 0, "sample_in_epoch": 64, "shuffle_seed": 1})
    state = dataset.state_dict(32, True)
    with pytest.raises(ConfigError, match="global_batch_size=16"):
        loader(sample_corpus, domains, batch=8).dataset.load_state_dict(state)


# --- reference losses ----------------------------------------------------------------------------

def test_reference_losses_cli_scores_each_domain_and_the_yaml_reads_the_file(sample_corpus, domains, tmp_path,
                                                                              capsys):
    from llmshearing.convert import save_composer_checkpoint
    from llmshearing.dynamic_loading import reference_loss
    from llmshearing.model.composer_model import ComposerLlama
    from tests.helpers import tiny_config

    torch.manual_seed(0)
    checkpoint = save_composer_checkpoint(ComposerLlama(tiny_config(vocab_size=49152)), tmp_path / "m.pt")
    out = tmp_path / "refs.json"
    assert reference_loss.main(["--model", str(checkpoint), "--data", str(sample_corpus), "--out", str(out),
                                "--batches", "1", "--batch-size", "2", "--seq-len", "16"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    losses = reference_loss.read_reference_losses(out)
    assert list(losses) == domains
    assert all(abs(value - math.log(49152)) < 1.5 for value in losses.values())  # an untrained model
    callback = _callback(sample_corpus, f"dynamic_loading.reference_losses_file={out}")
    assert np.allclose(callback.update.reference_losses, [losses[d] for d in domains])
    assert reference_loss.main(["--model", "/nonexistent", "--data", str(sample_corpus), "--out", str(out)]) == 2


# --- end to end through train.py -----------------------------------------------------------------

def run_train(*overrides):
    return subprocess.run([sys.executable, str(REPO / "train.py"), str(TINY), *map(str, overrides)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)


def record_run(out: Path, *overrides) -> dict:
    """A train.py run that also records every step's batch digest, the final loss, weights, params."""
    result = subprocess.run([sys.executable, str(REPO / "tests" / "record_batches.py"), str(out), str(TINY),
                             *map(str, overrides)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_resume_mid_run_with_workers_reproduces_the_uninterrupted_run(sample_corpus, domains, tmp_path):
    # train-batch losses, update every 4 steps, checkpoint at 6: the resume starts mid-window
    common = [f"data.path={sample_corpus}", *TINY_CPT, "max_duration=12ba", "save_interval=6ba",
              "dynamic_loading.update_interval=4", "dynamic_loading.loss_source=train",
              f"dynamic_loading.reference_losses={refs(domains, 9.0, prose=1.0)}"]
    whole = record_run(tmp_path / "whole.json", *common, f"save_folder={tmp_path / 'whole'}")
    resumed = record_run(tmp_path / "resumed.json", *common, f"save_folder={tmp_path / 'resumed'}",
                         f"load_path={tmp_path / 'whole' / 'ep0-ba6-rank0.pt'}")
    assert [step for step, _ in resumed["batches"]] == list(range(7, 13))
    assert resumed["batches"] == whole["batches"][6:]
    for key in ("loss", "weights", "params"):
        assert resumed[key] == whole[key], key
    assert whole["weights"][0] > 0.5  # prose (far above its reference) gained weight


def test_pruning_with_dynamic_loading_moves_weight_to_the_domain_far_above_its_reference(
        sample_corpus, domains, tmp_path):
    result = run_train(f"data.path={sample_corpus}", f"save_folder={tmp_path}", "max_duration=16ba",
                       "save_interval=16ba", "eval_interval=100ba", "dynamic_loading.update_interval=4",
                       "dynamic_loading.eta=0.3", "dynamic_loading.loss_batches=1",
                       f"dynamic_loading.reference_losses={refs(domains, 100.0, code=0.5)}")
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(tmp_path / "latest-rank0.pt", weights_only=False)["state"]
    history = state["callbacks"]["DynamicBatchLoading"]
    assert history["history_steps"] == [0, 4, 8, 12, 16]
    code = domains.index("code")
    code_weights = [w[code] for w in history["history_weights"]]
    assert code_weights[0] == pytest.approx(0.2) and all(b > a for a, b in zip(code_weights, code_weights[1:]))
    assert state["dataset_state"]["train"]["weights"] == history["history_weights"][-1]
    assert sum(state["dataset_state"]["train"]["drawn"]) == 16 * 4
    assert (tmp_path / "domain_weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_reference_losses_fail_in_train_py_with_one_line(sample_corpus):
    result = run_train(f"data.path={sample_corpus}", "dynamic_loading.reference_losses={prose: 1.0}")
    assert result.returncode == 2, result.stderr[-2000:]
    line = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert line.startswith("error: reference losses are for another set of domains"), line
    assert "Traceback" not in result.stderr


def _logged_update(sample_corpus, domains, tmp_path, loss_source: str) -> dict:
    """The first update's logged dynamic-loading metrics of a tiny pruning run that draws only prose."""
    from composer.loggers import InMemoryLogger

    from llmshearing.training import build_trainer

    only_prose = "[" + ", ".join("1.0" if d == "prose" else "0.0" for d in domains) + "]"
    cfg = load_config(TINY, [f"data.path={sample_corpus}", "max_duration=4ba", "eval_interval=100ba",
                             f"data.proportions={only_prose}", "dynamic_loading.update_interval=4",
                             f"dynamic_loading.loss_source={loss_source}", "dynamic_loading.loss_batches=2",
                             f"dynamic_loading.reference_losses={refs(domains, 1.0)}", "loggers={in_memory: {}}",
                             f"save_folder={tmp_path / loss_source}", "save_interval=100ba"])
    trainer = build_trainer(cfg)
    trainer.fit()
    logged = next(d for d in trainer.logger.destinations if isinstance(d, InMemoryLogger)).data
    return {key: float(values[-1][1]) for key, values in logged.items() if key.startswith("dynamic_loading/")}


def test_a_domain_without_samples_in_the_window_is_scored_on_its_eval_split(sample_corpus, domains, tmp_path):
    # train-batch losses, but only prose is drawn: the other domains get exactly the loss the eval
    # source measures for them (same model, same seeded mask samples), not a stale or missing one
    from_train = _logged_update(sample_corpus, domains, tmp_path, "train")
    from_eval = _logged_update(sample_corpus, domains, tmp_path, "eval")
    assert from_train["dynamic_loading/samples/prose"] == 16
    for domain in domains:
        loss = f"dynamic_loading/loss/{domain}"
        if domain == "prose":  # scored on its training batches
            assert math.isfinite(from_train[loss]) and from_train[loss] != from_eval[loss]
        else:
            assert from_train[f"dynamic_loading/samples/{domain}"] == 0
            assert from_train[loss] == pytest.approx(from_eval[loss], rel=1e-6), domain
        weight = f"dynamic_loading/weight/{domain}"
        assert math.isfinite(from_train[weight])
    assert sum(from_train[f"dynamic_loading/weight/{d}"] for d in domains) == pytest.approx(1.0)
