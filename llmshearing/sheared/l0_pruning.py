"""Composer algorithm that runs Sheared-LLaMA targeted structured pruning on a ComposerLlama.

INIT: attach an L0Module as ``model.l0`` (so log_alpha and λ are in every checkpoint) and add its
two optimiser groups; the model's forward then multiplies sampled masks in (deterministic in eval).
AFTER_LOSS: add the Lagrangian to the loss (logged as separate loss terms).
AFTER_TRAIN_BATCH: under FSDP, average the mask / λ gradients over the ranks (see distributed.py).
BATCH_END: clamp log_alpha, log expected sizes / λ / targets.
FIT_END: write the pruning plan made from the final deterministic masks into the run folder
(local or remote, see run_artifacts.py). Every checkpoint carries the plan of its own step besides
(in the L0 module's extra state, see llmshearing/checkpoint_plan.py): that is the one export reads.

Multi-process: the L0 module is replicated on every rank (never sharded) and kept identical by DDP
or by ``ReplicaSync`` under FSDP, so every rank holds the same log_alpha and λ; its noise stream is
seeded with the rank-zero seed, so every rank also samples the same masks. With ``per_rank_masks``
each rank draws from its own stream of that seed, as the reference implementation samples: N ranks
then average the gradients of N mask samples per step.

``warm_start``: a Minitron ``importance.json`` orders the gates' initial log_alpha (sheared/warm_start.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence, Tuple, Union

from composer.core import Algorithm, Event, State
from composer.loggers import Logger
from composer.utils import dist

from llmshearing.composer.distributed import ReplicaSync, attach_replicated, composer_model
from llmshearing.composer.run_artifacts import RunArtifacts, as_run_artifacts
from llmshearing.errors import ConfigError
from llmshearing.plan import PLAN_FILE
from llmshearing.shape import TargetShape
from llmshearing.sheared.hard_concrete import DEFAULT_LOG_ALPHA_RANGE, WARM_START_LOG_ALPHA_RANGE
from llmshearing.sheared.l0_module import L0Module
from llmshearing.sheared.warm_start import DEFAULT_CENTRE, DEFAULT_SPREAD, load_importance, warm_start

log = logging.getLogger(__name__)


COLD_START_RATE = 1.0  # the paper's mask and λ learning rates
WARM_START_RATE = 0.1


class L0Pruning(Algorithm):
    def __init__(
        self,
        target: Mapping,
        *,
        mask_lr: Optional[float] = None,
        lag_lr: Optional[float] = None,
        warmup_fraction: float = 0.2,
        init_mean: float = 5.0,
        init_std: float = 0.01,
        block_masks: bool = False,
        per_rank_masks: bool = False,
        warm_start: Optional[str] = None,
        warm_start_spread: float = DEFAULT_SPREAD,
        warm_start_centre: Optional[float] = None,
        normalized_keep_scores: bool = True,
        log_alpha_range: Optional[Sequence[float]] = None,
        plan_folder: Union[str, RunArtifacts, None] = None,
    ):
        self.target = dict(target)
        # a warm start begins at the target: the paper's rates, sized to carry the gates across the whole
        # log_alpha range from a cold start, make Adam's sign-like steps swing every gate of a structure
        # open and shut around it (SmolLM2: neurons 0.25 -> 0.48 of the source in 6 steps, issue 16)
        default_rate = WARM_START_RATE if warm_start else COLD_START_RATE
        self.mask_lr = default_rate if mask_lr is None else mask_lr
        self.lag_lr = default_rate if lag_lr is None else lag_lr
        self.warmup_fraction = warmup_fraction
        self.init_mean = init_mean
        self.init_std = init_std
        self.block_masks = block_masks
        self.per_rank_masks = per_rank_masks
        self.warm_start = warm_start
        self.warm_start_spread = warm_start_spread
        self.warm_start_centre = DEFAULT_CENTRE if warm_start_centre is None else warm_start_centre
        self.normalized_keep_scores = normalized_keep_scores
        if log_alpha_range is None:  # a cold start's gates must cross the range at the paper's rates: the reference's
            log_alpha_range = WARM_START_LOG_ALPHA_RANGE if warm_start else DEFAULT_LOG_ALPHA_RANGE
        self.log_alpha_range = _checked_range(log_alpha_range)
        self.plan_folder = as_run_artifacts(plan_folder)
        self.last_details: dict = {}
        self._sync: Optional[ReplicaSync] = None

    def match(self, event: Event, state: State) -> bool:
        return event in (Event.INIT, Event.FIT_START, Event.AFTER_LOSS, Event.AFTER_TRAIN_BATCH, Event.BATCH_END,
                         Event.FIT_END)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.INIT:
            self._attach(state)
        elif event == Event.FIT_START:
            self._start(state)
        elif event == Event.AFTER_LOSS:
            self._add_lagrangian(state)
        elif event == Event.AFTER_TRAIN_BATCH and self._sync is not None:
            self._sync.average_gradients()
        elif event == Event.BATCH_END:
            self.l0(state).clamp_()
            logger.log_metrics({f"pruning/{k}": v for k, v in self.last_details.items()})
        elif event == Event.FIT_END:
            self.write_plan(state, logger)

    @staticmethod
    def l0(state: State) -> L0Module:
        return composer_model(state).l0

    # ---------------------------------------------------------------------------------------
    def _attach(self, state: State) -> None:
        model = state.model
        source = model.config
        target = TargetShape.from_mapping(self.target, source)
        l0 = L0Module(
            source,
            target,
            init_mean=self.init_mean,
            init_std=self.init_std,
            block_masks=self.block_masks,
            normalized_keep_scores=self.normalized_keep_scores,
            log_alpha_range=self.log_alpha_range,
            seed=state.rank_zero_seed,  # the same mask samples on every rank ...
        )
        if self.per_rank_masks:  # ... unless each rank samples its own
            l0.noise.stream = dist.get_global_rank()
        if self.warm_start:  # every rank reads the same file: the replicas start equal; a resume loads over it
            warm_start(l0, load_importance(self.warm_start), self.warm_start_spread, self.warm_start_centre)
            l0.anchor_ramp()
            log.info("L0 masks warm-started from the importance in %s (spread %g, centre %g)", self.warm_start,
                     self.warm_start_spread, self.warm_start_centre)
        l0 = attach_replicated(state, "l0", l0)
        if not state.optimizers:
            raise ConfigError("L0Pruning needs an optimizer passed to the Trainer")
        optimizer = state.optimizers[0]
        optimizer.add_param_group({"params": list(l0.mask_parameters()), "lr": self.mask_lr, "weight_decay": 0.0})
        optimizer.add_param_group({"params": list(l0.lagrangian_parameters()), "lr": self.lag_lr, "weight_decay": 0.0})
        log.info("L0 pruning: %s -> %s", {k: getattr(source, k) for k in target.to_dict()}, target.to_dict())

    def _start(self, state: State) -> None:
        l0 = self.l0(state)
        l0.lagrangian_warmup_steps = self._warmup_steps(state)  # max_duration is only known once fit() starts
        self._sync = ReplicaSync.start(state, l0)

    def _warmup_steps(self, state: State) -> int:
        duration = state.max_duration
        if duration is None or duration.unit.name != "BATCH":
            if self.warmup_fraction == 0:
                return 0
            raise ConfigError("pruning needs max_duration in batches (e.g. 3200ba) to size the target warm-up")
        return int(round(self.warmup_fraction * duration.value))

    def _add_lagrangian(self, state: State) -> None:
        # other terms already there (distillation's kd and lm: Composer runs AFTER_LOSS algorithms in
        # reverse order, so a teacher's loss is in place first) are kept and logged
        loss = dict(state.loss) if isinstance(state.loss, dict) else {"total": state.loss, "lm": state.loss}
        lagrangian, details = self.l0(state).lagrangian(int(state.timestamp.batch))
        self.last_details = details
        state.loss = {**loss, "total": loss["total"] + lagrangian, "lagrangian": lagrangian}

    def write_plan(self, state: State, logger: Optional[Logger] = None) -> Optional[Path]:
        """The plan's local file (None on other ranks and without a plan folder)."""
        if dist.get_global_rank() != 0 or self.plan_folder is None:
            return None
        plan = self.l0(state).make_plan()
        if plan.warning():
            log.warning(plan.warning())
        path = self.plan_folder.write(PLAN_FILE, plan.save, state, logger)
        log.info("final pruning plan written to %s (target %s)", self.plan_folder.location(PLAN_FILE),
                 plan.target_shape().to_dict())
        return path


def _checked_range(log_alpha_range: Sequence[float]) -> Tuple[float, float]:
    values = [float(value) for value in log_alpha_range]
    if len(values) != 2 or not values[0] < values[1]:
        raise ConfigError(f"pruning.log_alpha_range must be [low, high] with low < high, got {values}")
    return values[0], values[1]
