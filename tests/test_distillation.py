"""Knowledge distillation: the losses, the Composer algorithm in a real Trainer, and a train.py run."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from llmshearing.composer.distillation import Distillation, hidden_state_loss, logit_kl, teacher_layer_indices
from llmshearing.config import load_config
from llmshearing.convert import export_hf
from llmshearing.errors import ConfigError
from llmshearing.minitron import Importance, build_plan
from llmshearing.model import LlamaConfig, LlamaForCausalLM
from llmshearing.model.composer_model import ComposerLlama
from llmshearing.shape import TargetShape
from llmshearing.slicing import slice_model
from tests.helpers import tiny_model

REPO = Path(__file__).resolve().parents[1]
KD_YAML = REPO / "yamls" / "minitron_kd_smollm2.yaml"
TEACHER = LlamaConfig(vocab_size=49152, hidden_size=48, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=6, num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
STUDENT = TargetShape(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
                      intermediate_size=40)
TOKENS = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))


def test_logit_kl_is_zero_for_equal_logits_and_matches_the_formula():
    torch.manual_seed(0)
    teacher, student = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    assert logit_kl(teacher.clone(), teacher, temperature=2.0).abs() < 1e-6
    p = (teacher / 2).softmax(-1)
    expected = (p * (p.log() - (student / 2).log_softmax(-1))).sum(-1).mean() * 4
    torch.testing.assert_close(logit_kl(student, teacher, temperature=2.0), expected)
    valid = torch.tensor([[True] * 5, [True, False, False, False, False]])
    per_token = (p * (p.log() - (student / 2).log_softmax(-1))).sum(-1)
    torch.testing.assert_close(logit_kl(student, teacher, 2.0, valid), per_token[valid].mean() * 4)


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_hidden_state_loss_is_zero_for_equal_states(kind):
    states = torch.randn(2, 5, 8)
    assert hidden_state_loss(states.clone(), states, kind) < 1e-6
    assert hidden_state_loss(states + torch.randn(2, 5, 8), states, kind) > 0.01


def distillation_state(student, ids):
    outputs = student(ids)
    lm = torch.nn.functional.cross_entropy(outputs[:, :-1].reshape(-1, outputs.shape[-1]), ids[:, 1:].reshape(-1))
    return SimpleNamespace(batch={"input_ids": ids}, outputs=outputs, loss=lm)


def test_kd_loss_is_zero_for_a_copy_of_the_teacher_and_its_gradient_reaches_only_the_student():
    teacher = tiny_model()
    algorithm = Distillation(teacher)
    algorithm.teacher = algorithm._prepare_teacher(teacher, torch.device("cpu"))
    assert all(not p.requires_grad for p in teacher.parameters()) and not teacher.training

    same = copy.deepcopy(teacher).train().requires_grad_(True)
    loss = algorithm._distillation_loss(distillation_state(same, TOKENS))
    assert set(loss) == {"total", "lm", "kd"} and loss["kd"].abs() < 1e-6 and loss["total"].abs() < 1e-6

    student = copy.deepcopy(same)
    with torch.no_grad():
        student.model.layers[1].mlp.down_proj.weight.mul_(0.5)
    loss = algorithm._distillation_loss(distillation_state(student, TOKENS))
    assert loss["kd"] > 1e-4
    loss["total"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.model.layers[1].mlp.down_proj.weight.grad.abs().sum() > 0


def test_alpha_mixes_the_lm_loss_and_keeps_other_loss_terms():
    teacher = tiny_model()
    algorithm = Distillation(teacher, alpha=0.25)
    algorithm.teacher = algorithm._prepare_teacher(teacher, torch.device("cpu"))
    state = distillation_state(tiny_model(seed=1), TOKENS)
    extra = torch.tensor(0.5)
    state.loss = {"total": state.loss + extra, "lm": state.loss, "lagrangian": extra}
    loss = algorithm._distillation_loss(state)
    torch.testing.assert_close(loss["total"], extra + 0.25 * loss["lm"] + 0.75 * loss["kd"])
    assert loss["lagrangian"] is extra


def test_student_layers_pair_with_their_source_layers_or_by_relative_depth():
    assert teacher_layer_indices([0, 1, 2], 3, 6) == [1, 3, 5]
    plan = SimpleNamespace(layers=[SimpleNamespace(source_index=i) for i in (0, 2, 5)])
    assert teacher_layer_indices([1, 2], 3, 6, plan) == [2, 5]


@pytest.mark.parametrize("kwargs, message", [(dict(alpha=1.5), "alpha"), (dict(temperature=0.0), "temperature")])
def test_bad_settings_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Distillation("teacher", **kwargs)


@pytest.mark.parametrize("override, message", [
    ("teacher.hidden_loss=l1", "teacher.hidden_loss must be one of cosine, mse; got 'l1'"),
    ("teacher.dtype=fp8", "teacher.dtype must be one of auto, float32, bfloat16; got 'fp8'"),
])
def test_the_teacher_sections_choices_are_checked_when_the_yaml_is_read(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(KD_YAML, [override])


@pytest.fixture(scope="module")
def teacher_and_student(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("kd")
    teacher = LlamaForCausalLM(TEACHER)
    plan = build_plan(Importance.random(TEACHER), STUDENT)
    export_hf(teacher, folder / "teacher")
    export_hf(slice_model(teacher, plan), folder / "student", plan=plan)
    return folder / "teacher", folder / "student"


@pytest.mark.filterwarnings("ignore:The warmup duration is 0")
def test_trainer_distils_with_a_frozen_teacher_and_optimises_the_projection(teacher_and_student, sample_corpus):
    from llmshearing.training import build_trainer

    teacher_dir, student_dir = teacher_and_student
    cfg = load_config(KD_YAML, [f"model.path={student_dir}", f"teacher.path={teacher_dir}",
                                f"data.path={sample_corpus}",
                                "teacher.hidden_weight=1.0", "teacher.hidden_layers=[0,-1]", "max_duration=2ba",
                                "data.seq_len=32", "eval_interval=2ba", "data.eval_max_batches=1", "save_folder=null",
                                "optimizer.lr=1e-2", "scheduler.name=constant", "scheduler.t_warmup=0ba"])
    trainer = build_trainer(cfg)
    algorithm = next(a for a in trainer.state.algorithms if isinstance(a, Distillation))
    projection = trainer.state.model.distill_projection
    optimised = {id(p) for group in trainer.state.optimizers[0].param_groups for p in group["params"]}
    assert all(id(p) in optimised for p in projection.parameters())
    teacher_params = list(algorithm.teacher.parameters())
    assert not any(id(p) in optimised for p in teacher_params)
    # the pruned student starts from the teacher's kept channels: the projection scatters them back
    kept = torch.as_tensor(build_plan(Importance.random(TEACHER), STUDENT).kept_hidden)
    assert torch.equal(projection.maps[0].weight[kept, torch.arange(32)], torch.ones(32))
    before = [p.detach().clone() for p in teacher_params]
    start = projection.maps[1].weight.detach().clone()
    student_start = trainer.state.model.model.lm_head.weight.detach().clone()
    trainer.fit()
    assert not torch.equal(student_start, trainer.state.model.model.lm_head.weight)
    assert all(torch.equal(a, b) for a, b in zip(before, algorithm.teacher.parameters()))
    assert not torch.equal(start, projection.maps[1].weight)
    assert not algorithm.teacher.training
    trainer.close()


def test_train_py_runs_the_shipped_distillation_yaml(teacher_and_student, sample_corpus, tmp_path):
    from llmshearing.convert import load_composer_model

    teacher_dir, student_dir = teacher_and_student
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(KD_YAML),
         f"model.path={student_dir}", f"teacher.path={teacher_dir}",
         f"data.path={sample_corpus}", f"save_folder={tmp_path}", "max_duration=3ba", "save_interval=3ba",
         "eval_interval=3ba", "data.seq_len=32", "console_log_interval=1ba"],
        capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loss/train/kd" in result.stdout + result.stderr
    model, _ = load_composer_model(tmp_path / "latest-rank0.pt")
    assert model.config.hidden_size == STUDENT.hidden_size


@pytest.mark.parametrize("overrides, message", [
    (["teacher.path=/nonexistent/teacher"], "/nonexistent/teacher"),
    (["teacher.alpha=2"], "alpha"),
    (["teacher.tempreature=2"], "did you mean 'teacher.temperature'"),
])
def test_bad_distillation_config_is_one_error_line(teacher_and_student, sample_corpus, capsys, overrides, message):
    from llmshearing.cli.train import main

    teacher_dir, student_dir = teacher_and_student
    code = main([str(KD_YAML), f"model.path={student_dir}", f"teacher.path={teacher_dir}", f"data.path={sample_corpus}",
                 "save_folder=null", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and message in err[-1], err


def test_teacher_with_another_vocabulary_is_refused(teacher_and_student):
    from composer.core import Event

    from llmshearing.convert import load_model

    _, student_dir = teacher_and_student
    state = SimpleNamespace(model=ComposerLlama.wrapping(load_model(student_dir)), optimizers=[])
    with pytest.raises(ConfigError, match="vocabulary"):
        Distillation(tiny_model()).apply(Event.INIT, state, None)


def test_shipped_yaml_loads_with_a_teacher_section():
    cfg = load_config(KD_YAML)
    assert cfg.teacher.path == "smollm2" and cfg.teacher.temperature == 1.0 and cfg.teacher.alpha == 0.0
    assert cfg.pruning is None
