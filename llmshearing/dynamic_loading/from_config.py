"""The ``dynamic_loading`` yaml section → the dynamic-mixture train loader and its callback.

Everything a user can get wrong (mode, interval, reference losses for other domains, a missing
reference-loss file, a duration the weight table cannot be sized for) fails here with a one-line
ConfigError, before the Trainer starts.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from composer.core import Time, TimeUnit
from composer.utils import dist
from torch.utils.data import DataLoader, Subset

from llmshearing.dynamic_loading.loss_sources import EvalSplitLoss, TrainBatchLoss
from llmshearing.dynamic_loading.callback import DynamicBatchLoading
from llmshearing.composer.run_artifacts import RunArtifacts
from llmshearing.config.schema import DynamicLoadingSection, TrainConfig
from llmshearing.dynamic_loading.mixture_update import MixtureUpdate
from llmshearing.errors import ConfigError

PLOT_FILE = "domain_weights.png"


def _checked_section(cfg: TrainConfig) -> DynamicLoadingSection:
    section = cfg.dynamic_loading
    if section.update_interval < 1:
        raise ConfigError(f"dynamic_loading.update_interval must be >= 1 step, got {section.update_interval}")
    if section.loss_batches < 1:
        raise ConfigError(f"dynamic_loading.loss_batches must be >= 1, got {section.loss_batches}")
    if section.max_repeats is not None and section.max_repeats < 0:
        raise ConfigError(f"dynamic_loading.max_repeats must be >= 0 or null, got {section.max_repeats}")
    return section


def max_steps(cfg: TrainConfig) -> int:
    try:
        duration = Time.from_timestring(str(cfg.max_duration))
    except ValueError as error:
        raise ConfigError(f"max_duration '{cfg.max_duration}' is not a Composer time string") from error
    if duration.unit != TimeUnit.BATCH:
        raise ConfigError(f"dynamic loading streams samples without epochs: give max_duration in "
                          f"batches (e.g. 3200ba), not '{cfg.max_duration}'")
    return int(duration.value)


def dynamic_train_loader(cfg: TrainConfig, domains: Sequence[str],
                         proportions: Optional[Sequence[float]]) -> DataLoader:
    from llmshearing.dynamic_loading.loader import build_dynamic_train_dataloader

    section = _checked_section(cfg)
    interval = section.update_interval if section.mode == "dynamic" else None
    return build_dynamic_train_dataloader(
        cfg.data.path, domains, proportions, cfg.global_train_batch_size, cfg.data.seq_len,
        cfg.seed, update_interval=interval, max_steps=max_steps(cfg),
        num_workers=cfg.data.num_workers, max_repeats=section.max_repeats, remote=cfg.data.remote,
        split=cfg.data.train_split)


def reference_losses(section: DynamicLoadingSection) -> Dict[str, float]:
    from llmshearing.dynamic_loading.reference_loss import read_reference_losses

    if section.reference_losses and section.reference_losses_file:
        raise ConfigError("give dynamic_loading.reference_losses or reference_losses_file, not both")
    if section.reference_losses_file:
        return read_reference_losses(section.reference_losses_file)
    return dict(section.reference_losses)


def rank_eval_loaders(cfg: TrainConfig, domains: Sequence[str], batches: int) -> List[DataLoader]:
    """Per domain, this rank's ``batches`` eval batches: rank r scores samples [r*n, (r+1)*n) of
    the split (n = batches * device_eval_batch_size, wrapping around a short split), so ranks
    share the measurement instead of repeating it, and all run the same number of forwards."""
    from llmshearing.data.loaders import open_eval_splits

    count = batches * cfg.device_eval_batch_size
    first = dist.get_global_rank() * count
    loaders = []
    for split in open_eval_splits(cfg.data.path, domains, cfg.data.seq_len).values():
        share = Subset(split, [(first + index) % len(split) for index in range(count)])
        loaders.append(DataLoader(share, batch_size=cfg.device_eval_batch_size, shuffle=False))
    return loaders


def dynamic_loading_callback(cfg: TrainConfig, domains: Sequence[str],
                             artifacts: Optional[RunArtifacts] = None) -> DynamicBatchLoading:
    """The callback; its weights plot goes to ``artifacts`` (the run folder), if given."""
    section = _checked_section(cfg)
    update = None
    if section.mode == "dynamic":
        references = reference_losses(section)
        if not references:
            raise ConfigError("dynamic_loading needs reference losses (reference_losses: {domain: loss} "
                              "or reference_losses_file), or mode: static")
        update = MixtureUpdate.for_domains(domains, references, section.eta, section.smoothing)
    eval_splits = EvalSplitLoss(rank_eval_loaders(cfg, domains, section.loss_batches), cfg.seed)
    source = eval_splits if section.loss_source == "eval" else TrainBatchLoss(len(domains), eval_splits)
    plot = artifacts.path(PLOT_FILE) if section.plot and artifacts is not None else None
    return DynamicBatchLoading(domains, section.update_interval, source, update, plot)
