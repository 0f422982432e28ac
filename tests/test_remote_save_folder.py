"""A remote save_folder: the checkpoints and the run's own files (plan, tokenizer, plots) reach the
object store under the save_folder's prefix, and nothing lands in a local folder named after the URI.

The store is a real Composer backend, no mocks: ``libcloud://`` is Composer's LibcloudObjectStore, here
over apache-libcloud's ``local`` provider, which keeps objects in a directory (save_backend_kwargs).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llmshearing.composer.run_artifacts import RunArtifacts, local_run_folder
from llmshearing.config import load_config
from llmshearing.errors import ConfigError
from tests.test_convert import save_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "yamls" / "tiny_prune.yaml"
CONTAINER = "bucket"
RUN = "remote-run"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def remote_run(sample_corpus, tmp_path_factory):
    """One tiny pruning run (pruning, dynamic loading, a tokenizer) saving to a libcloud:// folder;
    run from an empty working directory, so that a folder named after the URI would show."""
    pytest.importorskip("libcloud", reason="apache-libcloud (the [test] extra) is not installed")
    pytest.importorskip("fasteners", reason="fasteners (libcloud's local provider) is not installed")
    root = tmp_path_factory.mktemp("remote")
    store, cwd = root / "store", root / "cwd"
    (store / CONTAINER).mkdir(parents=True)
    cwd.mkdir()
    tokenizer = root / "tokenizer_source"  # the tiny model has no tokenizer of its own
    save_tiny_tokenizer(tokenizer, 16)
    run = SimpleNamespace(store=store, cwd=cwd, tokenizer=tokenizer, corpus=sample_corpus)
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(TINY), *remote_overrides(run, store),
         "max_duration=4ba", "save_interval=4ba"],
        capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run.stdout = result.stdout
    return run


def remote_overrides(run, store: Path):
    """The module's run settings, saving to the libcloud:// folder kept in the directory ``store``."""
    return [f"data.path={run.corpus}", f"run_name={RUN}", f"tokenizer={run.tokenizer}", "eval_interval=100ba",
            "console_log_interval=100ba", "dynamic_loading.mode=static",
            f"save_folder=libcloud://{CONTAINER}/runs/{{run_name}}",
            "save_backend_kwargs.provider=local", f"save_backend_kwargs.provider_kwargs.key={store}"]


def object_store(store: Path):
    from composer.utils import LibcloudObjectStore

    return LibcloudObjectStore(provider="local", container=CONTAINER, provider_kwargs={"key": str(store)})


def test_remote_run_uploads_checkpoint_plan_plots_and_tokenizer_next_to_each_other(remote_run, tmp_path):
    from llmshearing.convert import load_composer_model
    from llmshearing.sheared.l0_state import rebuild_l0_module

    store = object_store(remote_run.store)
    names = {name[len(f"runs/{RUN}/"):] for name in store.list_objects(prefix=f"runs/{RUN}/")}
    assert {"ep0-ba4-rank0.pt", "pruning_plan.json", "mask_sizes.png", "domain_weights.png"} <= names, names
    # the plan is the one the final masks make (what L0Pruning writes into a local save_folder)
    store.download_object(f"runs/{RUN}/pruning_plan.json", str(tmp_path / "plan.json"))
    store.download_object(f"runs/{RUN}/ep0-ba4-rank0.pt", str(tmp_path / "final.pt"))
    model, l0_state = load_composer_model(tmp_path / "final.pt")
    expected = rebuild_l0_module(model.config, l0_state).make_plan().to_dict()
    assert json.loads((tmp_path / "plan.json").read_text()) == json.loads(json.dumps(expected))
    for png in ("mask_sizes.png", "domain_weights.png"):
        store.download_object(f"runs/{RUN}/{png}", str(tmp_path / png))
        assert (tmp_path / png).read_bytes()[:8] == PNG, png
    # the tokenizer folder, file by file, as save_tokenizer writes it locally
    from llmshearing.assets import load_tokenizer, save_tokenizer

    save_tokenizer(load_tokenizer(remote_run.tokenizer), tmp_path / "local_tokenizer")
    local = {p.name: p.read_bytes() for p in (tmp_path / "local_tokenizer").iterdir()}
    assert {name for name in names if name.startswith("tokenizer/")} == {f"tokenizer/{name}" for name in local}
    for name, content in local.items():
        store.download_object(f"runs/{RUN}/tokenizer/{name}", str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == content, name


def test_remote_run_writes_no_local_folder_named_after_the_uri(remote_run):
    assert remote_run.stdout.strip().splitlines()[-1].endswith(f"checkpoints in libcloud://{CONTAINER}/runs/{RUN}")
    leaked = [p for p in remote_run.cwd.rglob("*") if p.name.startswith(("libcloud:", "s3:"))]
    assert not leaked and not (REPO / "libcloud:").exists(), leaked
    assert not list(remote_run.cwd.iterdir()), list(remote_run.cwd.iterdir())


def test_autoresume_continues_from_the_remote_latest_checkpoint(remote_run, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(remote_run.store, store)  # the module's run stays as it was for the other tests
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(TINY), *remote_overrides(remote_run, store),
         "max_duration=6ba", "save_interval=2ba", "autoresume=true"],
        capture_output=True, text=True, cwd=cwd, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Autoresuming training from checkpoint" in result.stderr
    names = set(object_store(store).list_objects(prefix=f"runs/{RUN}/"))
    assert {f"runs/{RUN}/ep0-ba4-rank0.pt", f"runs/{RUN}/ep0-ba6-rank0.pt"} <= names, names
    assert f"runs/{RUN}/ep0-ba2-rank0.pt" not in names  # resumed at step 4, not restarted


def test_artifact_names_follow_composers_checkpoint_names():
    assert RunArtifacts("s3://b/runs/{run_name}", "r1").remote_name("pruning_plan.json") == "runs/r1/pruning_plan.json"
    assert RunArtifacts("gs://b", "r1").remote_name("tokenizer/tokenizer.json") == "tokenizer/tokenizer.json"
    assert RunArtifacts("oci://b/x/", "r1").location("mask_sizes.png") == "oci://b/x/mask_sizes.png"
    assert local_run_folder("runs/{run_name}", "r1") == Path("runs/r1")
    assert local_run_folder("s3://b/runs", "r1") is None


def test_save_backend_kwargs_need_a_remote_save_folder(tmp_path):
    from llmshearing.training import build_trainer

    cfg = load_config(TINY, [f"save_folder={tmp_path}", "save_backend_kwargs.provider=local"])
    with pytest.raises(ConfigError, match="save_backend_kwargs are for a remote save_folder"):
        build_trainer(cfg)


def test_nan_guard_leaves_a_remote_folder_alone_and_says_so(tmp_path, monkeypatch):
    from llmshearing.composer.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss

    monkeypatch.chdir(tmp_path)
    state = SimpleNamespace(loss=torch.tensor(float("nan")), timestamp=SimpleNamespace(batch=3), run_name="r")
    with pytest.raises(NonFiniteLossError, match=r"at step 4;.*remote save_folder s3://b/runs were not set aside"):
        StopOnNonFiniteLoss("s3://b/runs").after_loss(state, None)
    assert not list(tmp_path.iterdir())
