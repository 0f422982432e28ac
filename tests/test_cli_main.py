"""The `llmshearing` front door: light --help and argument errors, one error line, the old paths,
`train` like train.py, and `prune sheared` from a model to an HF export."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmshearing.cli.main import COMMANDS
from llmshearing.prune.cli import METHODS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "composer", "transformers")
TINY_YAML = REPO / "yamls" / "tiny_prune.yaml"

# Runs `llmshearing ARGS` in a fresh interpreter, then reports which heavy packages it imported.
PROBE = f"""
import sys
from llmshearing.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print("imported:", *[name for name in {HEAVY!r} if name in sys.modules], file=sys.stderr)
sys.exit(code)
"""


def probe(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def heavy_imports(result: subprocess.CompletedProcess) -> list:
    return result.stderr.strip().splitlines()[-1].split()[1:]


def error_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if "error:" in line]


HELPS = [["--help"], *[[name, "--help"] for name in COMMANDS], *[["prune", method, "--help"] for method in METHODS],
         ["prepare", "merge", "--help"]]


@pytest.mark.parametrize("args", HELPS, ids=" ".join)
def test_help_answers_without_torch(args):
    result = probe(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: llmshearing {' '.join(args[:-1])}".rstrip()), result.stdout
    assert heavy_imports(result) == []


def test_the_overview_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "llmshearing", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert all(f"    {name}" in result.stdout for name in COMMANDS)


@pytest.mark.parametrize("args, message", [
    ([], "give a command"),
    (["trian"], "unknown command 'trian'; did you mean 'train'?"),
    (["eval"], "the following arguments are required: model, --data, --out"),
    (["prune"], "the following arguments are required: METHOD"),
    (["prune", "minitron", "--model", "m", "--data", "d", "--out", "o", "--target", "hidden_size=8",
      "--order", "lm_loss"], "argument --order: invalid choice: 'lm_loss'"),
    (["export", "ckpt.pt"], "the following arguments are required: dst"),
    (["prepare", "--tokenizer", "t", "--out", "o", "--seq-len", "many", "--root", "r"],
     "argument --seq-len: invalid int value: 'many'"),
    (["train"], "the following arguments are required: config"),
])
def test_bad_arguments_are_one_error_line_and_exit_2_without_torch(args, message):
    result = probe(*args)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert heavy_imports(result) == []


@pytest.mark.parametrize("alias, command", [
    (["-m", "llmshearing.prune", "minitron"], ["prune", "minitron"]),
    (["-m", "llmshearing.convert", "composer-to-hf"], ["export"]),
    (["-m", "llmshearing.eval"], ["eval"]),
    (["-m", "llmshearing.data.prepare"], ["prepare"]),
    (["-m", "llmshearing.data.reference_loss"], ["reference-loss"]),
    (["-m", "llmshearing.cli.demo"], ["demo"]),
    ([str(REPO / "train.py")], ["train"]),
])
def test_old_paths_still_answer_with_the_same_options(alias, command):
    def options(*args) -> list:
        result = subprocess.run([sys.executable, *args, "--help"], cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stderr
        return [line.split()[0] for line in result.stdout.splitlines() if line.startswith("  -")]

    assert options(*alias) == options("-m", "llmshearing", *command)


def test_an_old_path_and_its_command_fail_alike():
    results = [subprocess.run([sys.executable, "-m", *args, "missing.pt", "out"], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
               for args in (["llmshearing.convert", "composer-to-hf"], ["llmshearing", "export"])]
    assert [r.returncode for r in results] == [2, 2]
    assert results[0].stderr == results[1].stderr and results[0].stderr.startswith("error: ")
    assert "missing.pt" in results[0].stderr and "Traceback" not in results[0].stderr


def test_exit_codes_of_the_shared_runner(capsys):
    from llmshearing.cli.command import Interrupted, run_command
    from llmshearing.errors import RunFailedError, ShapeError

    def failing(exc):
        def work(args):
            raise exc
        return work

    assert run_command(failing(ShapeError("target too big\nsecond line")), None) == 2
    assert capsys.readouterr().err == "error: target too big second line\n"
    assert run_command(failing(RunFailedError("upload failed")), None) == 1
    assert run_command(failing(FileNotFoundError(2, "No such file or directory", "x.pt")), None) == 2
    assert run_command(failing(Interrupted("run it again to resume")), None) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "interrupted: run it again to resume"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_command(failing(KeyError("x")), None)


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_train_command_refuses_bad_input_as_train_py_does(sample_corpus):
    overrides = [f"data.path={sample_corpus}", "pruning.mask_lrr=1.0"]
    results = [run(REPO / "train.py", TINY_YAML, *overrides), run("-m", "llmshearing", "train", TINY_YAML, *overrides)]
    assert [r.returncode for r in results] == [2, 2]
    last = [r.stderr.strip().splitlines()[-1] for r in results]
    assert last[0] == last[1] and "did you mean 'pruning.mask_lr'" in last[0]


@pytest.mark.slow
def test_train_command_trains_as_train_py_does(sample_corpus, tmp_path):
    import torch

    from llmshearing.convert import read_composer_checkpoint

    short = ["max_duration=4ba", "save_interval=4ba", "eval_interval=100ba", f"data.path={sample_corpus}"]
    runs = {"train.py": [REPO / "train.py"], "llmshearing train": ["-m", "llmshearing", "train"]}
    states = []
    for name, command in runs.items():
        folder = tmp_path / name.replace(" ", "_")
        result = run(*command, TINY_YAML, *short, f"save_folder={folder}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip().splitlines()[-1] == f"run finished; checkpoints in {folder}"
        states.append(read_composer_checkpoint(folder / "latest-rank0.pt"))
    tensors = [{k: v for k, v in state.items() if isinstance(v, torch.Tensor)} for state in states]
    assert tensors[0].keys() == tensors[1].keys() and tensors[0]
    assert all(torch.equal(tensors[0][k], tensors[1][k]) for k in tensors[0])


@pytest.mark.slow
def test_composer_launches_the_train_command_on_each_rank(two_rank_train_run):
    """`composer -n 2 -m llmshearing train` (the run in conftest.py, shared with test_dynamic_loading.py)."""
    result, folder = two_rank_train_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert f"run finished; checkpoints in {folder}" in result.stdout
    assert (folder / "latest-rank0.pt").exists()


@pytest.mark.slow
def test_prune_sheared_turns_a_model_into_a_smaller_hf_model(sample_corpus, tmp_path):
    from transformers import AutoModelForCausalLM

    from llmshearing.convert import export_hf
    from llmshearing.model import LlamaConfig, LlamaForCausalLM
    from tests.test_convert import save_tiny_tokenizer

    config = LlamaConfig(vocab_size=49152, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                         num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True)
    source = export_hf(LlamaForCausalLM(config), tmp_path / "source")
    save_tiny_tokenizer(source, config.vocab_size)
    out = tmp_path / "pruned"
    result = run("-m", "llmshearing", "prune", "sheared", "--model", source, "--data", sample_corpus, "--out", out,
                 "--target", "hidden_size=32,num_attention_heads=2,num_key_value_heads=1,num_hidden_layers=3,"
                 "intermediate_size=40", "--steps", "4",
                 "data.seq_len=32", "global_train_batch_size=4", "device_train_microbatch_size=4",
                 "device_eval_batch_size=4", "data.eval_max_batches=1", "eval_interval=4ba", "device=cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert (tmp_path / "pruned-run" / "latest-rank0.pt").exists()
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert (hf.config.hidden_size, hf.config.num_attention_heads, hf.config.num_key_value_heads,
            hf.config.num_hidden_layers, hf.config.intermediate_size) == (32, 2, 1, 3, 40)
    assert (out / "tokenizer.json").is_file() and (out / "pruning_plan.json").is_file()
