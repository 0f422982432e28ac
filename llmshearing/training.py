"""Turn a TrainConfig into a Composer Trainer: model, data, optimizer, algorithms, callbacks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

import torch
from composer import Trainer
from composer.core import Evaluator
from composer.loggers import FileLogger, InMemoryLogger, MLFlowLogger, TensorboardLogger, WandBLogger
from composer.optim import (
    ConstantWithWarmupScheduler,
    CosineAnnealingWithWarmupScheduler,
    DecoupledAdamW,
    LinearWithWarmupScheduler,
)
from composer.utils import dist, reproducibility

from llmshearing.composer import StopOnNonFiniteLoss
from llmshearing.composer.checkpointing import check_checkpoint_to_load, install_atomic_checkpoint_writes
from llmshearing.composer.distributed import allow_fsdp_on_cpu
from llmshearing.composer.run_artifacts import RunArtifacts, is_remote
from llmshearing.config.schema import TrainConfig
from llmshearing.errors import ConfigError
from llmshearing.model.composer_model import ComposerLlama
from llmshearing.model.config import LlamaConfig
from llmshearing.shape import TargetShape
from llmshearing.sheared.l0_pruning import L0Pruning
from llmshearing.sheared.mask_plot import MaskSizePlot
from llmshearing.tokenizer_files import TOKENIZER_DIR, model_tokenizer_path

log = logging.getLogger(__name__)

LOGGERS = {
    "file": FileLogger,
    "tensorboard": TensorboardLogger,
    "wandb": WandBLogger,
    "mlflow": MLFlowLogger,
    "in_memory": InMemoryLogger,
}
SCHEDULERS = {
    "constant": lambda s: ConstantWithWarmupScheduler(t_warmup=s.t_warmup),
    "linear": lambda s: LinearWithWarmupScheduler(t_warmup=s.t_warmup, alpha_f=s.alpha_f),
    "cosine": lambda s: CosineAnnealingWithWarmupScheduler(t_warmup=s.t_warmup, alpha_f=s.alpha_f),
}


def build_model(cfg: TrainConfig) -> ComposerLlama:
    if cfg.model.path is None:
        if not cfg.model.config:
            raise ConfigError("give model.path (HF dir, .gguf, Composer checkpoint) or model.config for random init")
        model = ComposerLlama(LlamaConfig.from_dict(cfg.model.config))
    else:
        from llmshearing.convert.sources import load_model

        model = ComposerLlama.wrapping(load_model(cfg.model.path))
        for key, value in cfg.model.config.items():
            if key != "attn_impl":
                raise ConfigError(f"model.config.{key} cannot override a loaded model (only attn_impl)")
            model.config.attn_impl = value
            for module in model.modules():
                if hasattr(module, "attn_impl"):
                    module.attn_impl = value
    model.model.model.gradient_checkpointing = cfg.model.gradient_checkpointing
    model.loss_chunk_tokens, model.loss_kernel = loss_head_settings(cfg)
    return model


def loss_head_settings(cfg: TrainConfig):
    """(model.loss_chunk_tokens, model.loss_kernel), checked."""
    chunk, kernel = cfg.model.loss_chunk_tokens, cfg.model.loss_kernel
    if chunk < 0:
        raise ConfigError(f"model.loss_chunk_tokens must be >= 0 (0: the whole micro-batch's logits), got {chunk}")
    if kernel != "torch" and cfg.dynamic_loading is not None and cfg.dynamic_loading.loss_source == "train":
        raise ConfigError("dynamic_loading.loss_source: train needs per-sample losses, which a fused loss kernel "
                          "does not give: set model.loss_kernel: torch")
    return chunk, kernel


def check_target(cfg: TrainConfig, model: ComposerLlama) -> None:
    if cfg.pruning is None:
        return
    if not cfg.pruning.target:
        raise ConfigError("pruning.target is empty: give at least one of hidden_size, num_attention_heads, ...")
    TargetShape.from_mapping(cfg.pruning.target, model.config).validate_against(model.config)


def fsdp_settings(cfg: TrainConfig) -> Optional[dict]:
    """Composer's FSDP settings for ``cfg``; activation checkpointing is non-reentrant.

    Composer's default, reentrant checkpointing, re-runs a layer in backward on inputs it saw
    only as a dict of tensors (the masks) and back-propagates into their graph once per layer:
    the second layer's backward fails ("backward through the graph a second time").
    """
    if not cfg.fsdp:
        return None
    if cfg.fsdp.get("activation_checkpointing_reentrant"):
        raise ConfigError("fsdp.activation_checkpointing_reentrant=true cannot back-propagate into the masks "
                          "the decoder layers share: leave it out (non-reentrant checkpointing is used)")
    return {**cfg.fsdp, "activation_checkpointing_reentrant": False}


def check_parallelism(cfg: TrainConfig) -> None:
    """FSDP settings that would fail on the first backward, or recompute every layer twice."""
    if not cfg.fsdp:
        return
    fsdp_settings(cfg)
    if cfg.fsdp.get("activation_checkpointing") and cfg.model.gradient_checkpointing:
        raise ConfigError("model.gradient_checkpointing and fsdp.activation_checkpointing both checkpoint every "
                          "decoder layer: keep one (model.gradient_checkpointing=false under FSDP)")


def build_optimizer(cfg: TrainConfig, model: ComposerLlama) -> torch.optim.Optimizer:
    o = cfg.optimizer
    return DecoupledAdamW(
        model.model.parameters(), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
    )


def check_train_split(split: str, manifest: dict, corpus: str) -> None:
    if split != "train" and split not in manifest.get("splits", ["train", "eval"]):
        raise ConfigError(f"corpus {corpus} has no '{split}' split; prepare it with "
                          "python -m llmshearing.data.prepare --cpt-tokens N, or train on data.train_split=train")


def build_data(cfg: TrainConfig, model: ComposerLlama):
    from llmshearing.data.corpus import load_manifest
    from llmshearing.data.loaders import build_eval_dataloaders, build_train_dataloader

    if not cfg.data.path:
        raise ConfigError("data.path is not set: point it at a corpus made by python -m llmshearing.data.prepare")
    if cfg.data.remote:
        from llmshearing.data.remote import mirror_corpus

        mirror_corpus(cfg.data.remote, cfg.data.path, cfg.data.domains, cfg.data.train_split)
    manifest = load_manifest(cfg.data.path)
    vocab = manifest.get("vocab_size")
    if vocab is not None and vocab > model.config.vocab_size:
        raise ConfigError(
            f"the corpus was tokenized with a vocabulary of {vocab} tokens but the model has "
            f"{model.config.vocab_size}: use the model's own tokenizer"
        )
    check_train_split(cfg.data.train_split, manifest, cfg.data.path)
    domains = cfg.data.domains or list(manifest["domains"])
    proportions = cfg.data.proportions or [1.0 / len(domains)] * len(domains)
    world = dist.get_world_size()
    if cfg.global_train_batch_size % world:
        raise ConfigError(f"global_train_batch_size {cfg.global_train_batch_size} is not divisible by {world} ranks")
    if cfg.dynamic_loading is not None:
        from llmshearing.dynamic_loading.from_config import dynamic_train_loader

        train = dynamic_train_loader(cfg, domains, proportions)
    else:
        train = build_train_dataloader(
            cfg.data.path, domains, proportions, batch_size=cfg.global_train_batch_size // world,
            seq_len=cfg.data.seq_len, seed=cfg.seed, num_workers=cfg.data.num_workers, remote=cfg.data.remote,
            split=cfg.data.train_split,
        )
    evals = build_eval_dataloaders(
        cfg.data.path, domains, batch_size=cfg.device_eval_batch_size, seq_len=cfg.data.seq_len,
        max_batches=cfg.data.eval_max_batches,
    )
    evaluators = [
        Evaluator(label=f"eval/{domain}", dataloader=loader, metric_names=["LanguageCrossEntropy", "LanguagePerplexity"])
        for domain, loader in evals.items()
    ]
    return train, evaluators


def save_tokenizer(cfg: TrainConfig, vocab_size: int, artifacts: Optional[RunArtifacts]) -> None:
    """Check the tokenizer against the model now; it is written to save_folder/tokenizer at the
    Trainer's INIT, once the run folder is known (kept if a local one already has it)."""
    source = cfg.tokenizer or model_tokenizer_path(cfg.model.path)
    if artifacts is None or not source or dist.get_global_rank() != 0:
        return
    from llmshearing.assets import load_tokenizer, save_tokenizer

    tokenizer = load_tokenizer(source)
    if len(tokenizer) > vocab_size:
        raise ConfigError(f"the tokenizer {source} has {len(tokenizer)} tokens but the model's vocabulary has "
                          f"{vocab_size}: give the model's own tokenizer")

    def write(target: Path) -> None:
        if not target.exists():
            save_tokenizer(tokenizer, target)

    artifacts.write(TOKENIZER_DIR, write)


def build_callbacks(cfg: TrainConfig, train_loader, artifacts: Optional[RunArtifacts]) -> List:
    from llmshearing.eval.pooled_callback import PooledEvalMetrics

    # per-domain evaluators + the pooled "all" row, weighted as in python -m llmshearing.eval
    callbacks = [StopOnNonFiniteLoss(cfg.save_folder), PooledEvalMetrics()]
    if cfg.dynamic_loading is not None:
        from llmshearing.dynamic_loading.from_config import dynamic_loading_callback

        callbacks.append(dynamic_loading_callback(cfg, train_loader.dataset.domains, artifacts))
    if cfg.pruning is not None and cfg.mask_plot and artifacts is not None:
        callbacks.append(MaskSizePlot(artifacts))
    if artifacts is not None:
        callbacks.append(artifacts)  # last: uploads what the callbacks above wrote at FIT_END
    return callbacks


def build_algorithms(cfg: TrainConfig, artifacts: Optional[RunArtifacts]) -> List:
    algorithms = []
    if cfg.pruning is not None:
        p = cfg.pruning
        algorithms.append(L0Pruning(
            p.target, mask_lr=p.mask_lr, lag_lr=p.lag_lr, warmup_fraction=p.warmup_fraction,
            init_mean=p.init_mean, init_std=p.init_std, block_masks=p.block_masks,
            per_rank_masks=p.per_rank_masks, warm_start=p.warm_start, warm_start_spread=p.warm_start_spread,
            warm_start_centre=p.warm_start_centre, normalized_keep_scores=p.normalized_keep_scores,
            log_alpha_range=p.log_alpha_range,
            plan_folder=artifacts,
        ))
    if cfg.teacher is not None:
        from llmshearing.composer.distillation import distillation_from_config

        algorithms.append(distillation_from_config(cfg.teacher, cfg.model.path))
    return algorithms


def build_loggers(cfg: TrainConfig) -> List:
    loggers = []
    for name, kwargs in cfg.loggers.items():
        if name not in LOGGERS:
            raise ConfigError(f"unknown logger '{name}'; choose from {sorted(LOGGERS)}")
        loggers.append(LOGGERS[name](**(kwargs or {})))
    return loggers


def build_trainer(cfg: TrainConfig) -> Trainer:
    if cfg.autoresume and not (cfg.run_name and cfg.save_folder):
        raise ConfigError("autoresume needs run_name and save_folder")
    if cfg.save_backend_kwargs and not is_remote(cfg.save_folder):
        raise ConfigError(f"save_backend_kwargs are for a remote save_folder (s3://, libcloud://, ...), "
                          f"not {cfg.save_folder}")
    # Composer applies python_log_level to its own loggers only; ours (e.g. the loss head's memory line) too
    logging.getLogger("llmshearing").setLevel(cfg.python_log_level.upper())
    check_checkpoint_to_load(cfg)  # a corrupt checkpoint fails now, named, not deep inside torch.load
    install_atomic_checkpoint_writes()
    check_parallelism(cfg)
    if cfg.fsdp:
        allow_fsdp_on_cpu()
    reproducibility.seed_all(cfg.seed)
    model = build_model(cfg)
    check_target(cfg, model)
    train_loader, evaluators = build_data(cfg, model)
    artifacts = RunArtifacts.for_config(cfg)
    callbacks = build_callbacks(cfg, train_loader, artifacts)
    save_tokenizer(cfg, model.config.vocab_size, artifacts)
    optimizer = build_optimizer(cfg, model)
    parallelism = {"fsdp": fsdp_settings(cfg)} if cfg.fsdp else None
    return Trainer(
        run_name=cfg.run_name,
        model=model,
        train_dataloader=train_loader,
        eval_dataloader=evaluators,
        eval_interval=cfg.eval_interval,
        eval_subset_num_batches=cfg.data.eval_max_batches or -1,
        optimizers=optimizer,
        schedulers=SCHEDULERS[cfg.scheduler.name](cfg.scheduler),
        max_duration=cfg.max_duration,
        device_train_microbatch_size=cfg.device_train_microbatch_size,
        precision=cfg.precision,
        device=cfg.device,
        parallelism_config=parallelism,
        algorithms=build_algorithms(cfg, artifacts),
        callbacks=callbacks,
        loggers=build_loggers(cfg),
        save_folder=cfg.save_folder,
        save_interval=cfg.save_interval,
        save_num_checkpoints_to_keep=cfg.save_num_checkpoints_to_keep,
        save_overwrite=cfg.save_overwrite,
        autoresume=cfg.autoresume,
        load_path=cfg.load_path,
        load_weights_only=cfg.load_weights_only,
        seed=cfg.seed,
        progress_bar=cfg.progress_bar,
        log_to_console=True,
        console_log_interval=cfg.console_log_interval,
        python_log_level=cfg.python_log_level,
    )
