"""Faults a long run meets: each ends in a one-line error (train.py exit code 2) and loses nothing
already written. (NaN loss: tests/test_train.py, exit code 3; typo'd yaml keys and impossible GQA
targets: tests/test_train.py and tests/test_config.py.)"""
from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llmshearing.checkpoint_files import PARTIAL_PREFIX, verify_checkpoint_file, write_atomically
from llmshearing.cli.train import main as train_main
from llmshearing.config import load_config
from llmshearing.convert import save_composer_checkpoint
from llmshearing.convert.cli import main as convert_main
from llmshearing.errors import CheckpointError
from llmshearing.model.composer_model import ComposerLlama
from tests.helpers import tiny_config
from tests.test_train import TINY

SHORT_RUN = ["max_duration=6ba", "save_interval=2ba", "eval_interval=100ba", "console_log_interval=100ba"]


def train(capsys, *overrides) -> tuple:
    """(exit code, last stderr line) of train.py run in this process."""
    code = train_main([str(TINY), *map(str, overrides)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, lines[-1] if lines else ""


def damage(path: Path, how: str) -> Path:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # one flipped byte in the middle of the tensor data
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_composer_checkpoint(ComposerLlama(tiny_config()), tmp_path / "ep0-ba4-rank0.pt")


# --- checkpoints -----------------------------------------------------------------------------------

def test_a_crash_while_writing_leaves_the_previous_file_and_no_partial_one(tmp_path):
    final = tmp_path / "ep0-ba4-rank0.pt"
    final.write_bytes(b"previous")

    def crash(partial: Path) -> None:
        partial.write_bytes(b"half of a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(final, crash)
    assert final.read_bytes() == b"previous" and os.listdir(tmp_path) == [final.name]


def test_disk_full_while_saving_is_one_line_and_keeps_the_last_good_checkpoint(sample_corpus, tmp_path,
                                                                              capsys, monkeypatch):
    from composer.utils import checkpoint as composer_checkpoint

    class FullDisk(io.FileIO):
        def write(self, data) -> int:
            super().write(bytes(memoryview(data)[:100]))  # some bytes reach the disk, then it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def open_on_a_full_disk(file, mode="r", *args, **kwargs):
        if "-ba4-" in os.path.basename(file) and "w" in mode:
            return FullDisk(file, mode)
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(composer_checkpoint, "open", open_on_a_full_disk, raising=False)
    code, line = train(capsys, f"data.path={sample_corpus}", f"save_folder={tmp_path}", *SHORT_RUN)
    assert code == 2, line
    assert line.startswith(f"error: could not write checkpoint {tmp_path / 'ep0-ba4-rank0.pt'}: "
                           "No space left on device"), line
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["ep0-ba2-rank0.pt", "latest-rank0.pt"]
    assert os.readlink(tmp_path / "latest-rank0.pt") == "ep0-ba2-rank0.pt"
    verify_checkpoint_file(tmp_path / "latest-rank0.pt")
    assert not list(tmp_path.glob(f"{PARTIAL_PREFIX}*"))


@pytest.mark.parametrize("how", ["truncated", "flipped"])
@pytest.mark.parametrize("found_by", ["load_path", "autoresume"])
def test_a_damaged_checkpoint_to_resume_from_is_named_in_one_line(sample_corpus, checkpoint, capsys, how,
                                                                  found_by):
    damage(checkpoint, how)
    if found_by == "autoresume":
        (checkpoint.parent / "latest-rank0.pt").symlink_to(checkpoint.name)
        resume = ["autoresume=true", f"save_folder={checkpoint.parent}"]
    else:
        resume = [f"load_path={checkpoint}"]
    code, line = train(capsys, f"data.path={sample_corpus}", *resume)
    assert code == 2
    assert line.startswith(f"error: checkpoint {checkpoint} is ") and ("corrupt" in line), line


def test_convert_refuses_a_checkpoint_with_flipped_bits(checkpoint, tmp_path, capsys):
    code = convert_main(["composer-to-hf", str(damage(checkpoint, "flipped")), str(tmp_path / "hf")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(checkpoint) in err and "CRC" in err
    assert not (tmp_path / "hf").exists()


def test_autoresume_without_its_latest_link_takes_the_newest_whole_checkpoint(checkpoint):
    from llmshearing.composer.checkpointing import check_checkpoint_to_load

    folder = checkpoint.parent
    shutil.copy(checkpoint, folder / "ep0-ba2-rank0.pt")
    (folder / f"{PARTIAL_PREFIX}99-ep0-ba6-rank0.pt").write_bytes(b"a save that was killed")
    (folder / "latest-rank0.pt").symlink_to("ep0-ba8-rank0.pt")  # dangling
    cfg = load_config(TINY, [f"save_folder={folder}", "autoresume=true"])
    assert check_checkpoint_to_load(cfg) == checkpoint
    assert os.readlink(folder / "latest-rank0.pt") == checkpoint.name
    assert not list(folder.glob(f"{PARTIAL_PREFIX}*"))  # the killed save's leftovers are gone


def test_verify_checkpoint_false_skips_only_the_crc_check(checkpoint):
    from llmshearing.composer.checkpointing import check_checkpoint_to_load

    flipped = damage(checkpoint, "flipped")
    cfg = load_config(TINY, [f"load_path={flipped}", "verify_checkpoint=false"])
    assert check_checkpoint_to_load(cfg) == flipped  # what a user who turned the check off asked for
    with pytest.raises(CheckpointError, match="CRC"):
        check_checkpoint_to_load(load_config(TINY, [f"load_path={flipped}"]))
    damage(flipped, "truncated")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        check_checkpoint_to_load(cfg)  # a cut-off archive is still refused without the CRC pass


def test_verify_accepts_a_whole_checkpoint(checkpoint):
    assert verify_checkpoint_file(checkpoint) == checkpoint
    with pytest.raises(CheckpointError, match="not found"):
        verify_checkpoint_file(checkpoint.parent / "nope.pt")


# --- data and model ----------------------------------------------------------------------------------

@pytest.fixture
def corpus_copy(sample_corpus, tmp_path) -> Path:
    return Path(shutil.copytree(sample_corpus, tmp_path / "corpus"))


def _first_train_shard(corpus: Path, domain: str = "prose") -> Path:
    return sorted((corpus / domain / "train").rglob("*.mds"))[0]


def test_a_shard_with_a_corrupt_header_is_named_before_training(corpus_copy, capsys):
    shard = _first_train_shard(corpus_copy)
    data = bytearray(shard.read_bytes())
    data[8:40] = np.random.default_rng(0).integers(0, 256, 32, dtype=np.uint8).tobytes()  # sample offsets
    shard.write_bytes(bytes(data))
    code, line = train(capsys, f"data.path={corpus_copy}")
    assert code == 2 and line == f"error: shard file {shard} is corrupt: its sample offsets do not fit the file"


def test_a_shard_with_corrupt_samples_is_named_when_read_in_a_worker(corpus_copy, capsys):
    shard = _first_train_shard(corpus_copy)
    data = bytearray(shard.read_bytes())
    first_sample = int(np.frombuffer(bytes(data[4:8]), "<u4")[0])
    data[first_sample:] = b"\xff" * (len(data) - first_sample)  # header intact, every sample garbage
    shard.write_bytes(bytes(data))
    code, line = train(capsys, f"data.path={corpus_copy}", "data.num_workers=1", *SHORT_RUN)
    assert code == 2 and line.startswith(f"error: shard file {shard} is corrupt: its sample "), line


def _rewrite_split(split: Path, change) -> Path:
    """Write ``split`` again, a valid MDS split, with ``change`` applied to every sample's tokens."""
    from streaming import LocalDataset, MDSWriter

    samples = [change(sample["tokens"].copy()) for sample in LocalDataset(local=str(split))]
    shutil.rmtree(split)
    with MDSWriter(out=str(split), columns={"tokens": f"ndarray:{samples[0].dtype.name}"}) as writer:
        for tokens in samples:
            writer.write({"tokens": tokens})
    return sorted(split.rglob("*.mds"))[0]


def _out_of_vocabulary(tokens):
    tokens[5] = 60_000
    return tokens


def test_token_ids_outside_the_vocabulary_are_named_with_their_shard(corpus_copy, capsys):
    shard = _rewrite_split(corpus_copy / "prose" / "train", _out_of_vocabulary)
    code, line = train(capsys, f"data.path={corpus_copy}", *SHORT_RUN)
    assert code == 2 and line.startswith(f"error: shard file {shard} is corrupt: its sample "), line
    assert line.endswith("(token id 60000 is outside the corpus's vocabulary of 49152 tokens)"), line


def test_token_ids_outside_the_vocabulary_in_an_eval_split_are_named(corpus_copy, tmp_path, capsys):
    from llmshearing.convert import export_hf
    from llmshearing.eval.cli import main as eval_main
    from llmshearing.model import LlamaForCausalLM

    model = export_hf(LlamaForCausalLM(tiny_config(vocab_size=49152)), tmp_path / "hf")
    _rewrite_split(corpus_copy / "code" / "eval", _out_of_vocabulary)
    assert eval_main([str(model), "--data", str(corpus_copy), "--out", str(tmp_path / "r.json")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"error: eval split {corpus_copy / 'code' / 'eval'}, sample 0: token id 60000 is outside "
                    f"the corpus's vocabulary of 49152 tokens"), line


def test_a_missing_domain_directory_is_named(corpus_copy, capsys):
    shutil.rmtree(corpus_copy / "code")
    code, line = train(capsys, f"data.path={corpus_copy}")
    assert code == 2 and line == f"error: 'code' train split not found: {corpus_copy / 'code' / 'train'}"


def test_a_model_vocabulary_smaller_than_the_corpus_tokenizer_is_refused(sample_corpus, capsys):
    code, line = train(capsys, f"data.path={sample_corpus}", "model.config.vocab_size=1000")
    assert code == 2
    assert line.startswith("error: the corpus was tokenized with a vocabulary of 49152 tokens but the model has 1000")


def test_a_tokenizer_larger_than_the_model_vocabulary_is_refused(sample_corpus, tmp_path, capsys):
    from tests.test_convert import save_tiny_tokenizer

    save_tiny_tokenizer(tmp_path / "tokenizer", 49152 + 10)  # the tiny model has the corpus's 49152
    code, line = train(capsys, f"data.path={sample_corpus}", f"tokenizer={tmp_path / 'tokenizer'}",
                       f"save_folder={tmp_path / 'run'}")
    assert code == 2
    assert line == (f"error: the tokenizer {tmp_path / 'tokenizer'} has 49162 tokens but the model's vocabulary "
                    "has 49152: give the model's own tokenizer")
    assert not list((tmp_path / "run").glob("*.pt"))
