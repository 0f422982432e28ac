"""A short in-process Composer run that trains a (pruned) model in place: knowledge distillation
from a teacher when one is given (the same Distillation algorithm as yaml runs), else LM loss only.
Used by the architecture search to lightly retrain its best candidates, and by the benchmark."""
from __future__ import annotations

from typing import Optional

from llmshearing.model.llama import LlamaForCausalLM


def short_training(
    student: LlamaForCausalLM,
    data_dir,
    *,
    steps: int,
    batch_size: int = 4,
    seq_len: Optional[int] = None,
    lr: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    teacher: Optional[LlamaForCausalLM] = None,
    alpha: float = 0.0,
) -> LlamaForCausalLM:
    """Train ``student`` for ``steps`` batches of ``batch_size`` x ``seq_len`` tokens (seeded mixture of
    all domains); the same seed gives the same tokens with or without a teacher. ``alpha`` is the LM
    loss's share of the distillation loss (0: pure KD, as in Minitron)."""
    from composer import Trainer
    from composer.optim import DecoupledAdamW

    from llmshearing.composer.distillation import Distillation
    from llmshearing.data.corpus import load_manifest
    from llmshearing.data.loaders import build_train_dataloader
    from llmshearing.model.composer_model import ComposerLlama

    manifest = load_manifest(data_dir)
    loader = build_train_dataloader(data_dir, list(manifest["domains"]), None, batch_size=batch_size,
                                    seq_len=seq_len or int(manifest["seq_len"]), seed=seed)
    was_training = student.training
    trainer = Trainer(
        model=ComposerLlama(student.config, model=student),
        train_dataloader=loader,
        optimizers=DecoupledAdamW(student.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0),
        max_duration=f"{steps}ba",
        algorithms=[Distillation(teacher, alpha=alpha)] if teacher is not None else [],
        device="gpu" if str(device).startswith("cuda") else "cpu",
        seed=seed,
        progress_bar=False,
        log_to_console=False,
        loggers=[],
    )
    trainer.fit()
    trainer.close()
    student.train(was_training)
    return student
