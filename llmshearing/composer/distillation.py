"""Knowledge distillation from a frozen teacher (Minitron's recovery training) as a Composer algorithm.

The loss that trains the student becomes

    alpha * LM + (1 - alpha) * T^2 * KL(teacher || student at temperature T) + hidden_weight * H

where H is the intermediate-state loss between chosen student layers' outputs, mapped to the
teacher's width by learned linear projections, and the teacher's matching layers (1 - cosine or
normalised MSE). Other loss terms already in ``state.loss`` (e.g. a Lagrangian) are kept.

INIT: load the teacher (frozen, eval mode, no gradients), attach the projections to the model as
``model.distill_projection`` (so they are in checkpoints) and add them to the optimizer, and give the
model its distillation head.
Forward (training steps): the student's loss head runs the teacher on the same micro-batch and
computes alpha * LM + (1 - alpha) * T^2 * KL chunk by chunk from both models' final hidden states
and lm_head weights (model/loss_head.py), no logits tensor of either model: the student's weight is
read inside the student's forward, the teacher's inside the teacher's, where FSDP has each unsharded.
AFTER_LOSS: log the LM and KD terms and add the hidden-state term. (With ``model.loss_chunk_tokens``
0 the student returns logits, and the teacher's logits are compared with them here, as before.)
The teacher lives in the algorithm, not in the model: it is never saved or optimised.

Multi-process: under DDP every rank holds the whole teacher (it has no gradients to synchronise).
Under FSDP the teacher is sharded like the student (one FSDP unit per decoder layer, the run's
sharding strategy, in its own dtype), so a 8B teacher in bf16 costs 16 GB / N per GPU instead of
16 GB; every rank runs it on every micro-batch, as FSDP requires. Only rank 0 reads the teacher's
files (into host memory); the other ranks build it empty and ``distributed.shard_frozen``
broadcasts rank 0's weights into it one decoder layer at a time, so a node needs host memory for
one teacher, not one per rank. The projections are replicated and kept equal on every rank
(``distributed.ReplicaSync``).
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from composer.core import Algorithm, Event, State
from composer.devices import DeviceGPU
from composer.loggers import Logger
from composer.utils import dist
from torch import nn

from llmshearing.composer.distributed import ReplicaSync, attach_replicated, composer_model, shard_frozen
from llmshearing.convert.weights import cast_parameters
from llmshearing.errors import ConfigError
from llmshearing.model.composer_model import IGNORE_INDEX, next_token_targets
from llmshearing.model.llama import DecoderLayer, LlamaForCausalLM
from llmshearing.model.loss_head import head_losses
from llmshearing.model.next_token_loss import LossHeadOutput
from llmshearing.plan import PruningPlan

log = logging.getLogger(__name__)

TEACHER_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}


def logit_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
             valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean over (valid) tokens of KL(teacher || student) of the tempered distributions, times T^2."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    per_token = F.kl_div(student, teacher, log_target=True, reduction="none").sum(dim=-1)
    if valid is not None:
        per_token = per_token[valid]
    return per_token.mean() * temperature ** 2


def hidden_state_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """1 - cosine similarity per token, or MSE normalised by the teacher's mean square, averaged."""
    student, teacher = student.float(), teacher.float()
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    return F.mse_loss(student, teacher) / teacher.pow(2).mean().clamp(min=1e-12)


class LayerOutputs:
    """Forward hooks keeping the outputs of some decoder layers from the last forward pass."""

    def __init__(self, layers: nn.ModuleList, indices: Sequence[int], only_training: bool):
        self.outputs = {}
        self.indices = list(indices)
        self._handles = [layers[i].register_forward_hook(self._keep(i, only_training)) for i in self.indices]

    def _keep(self, index: int, only_training: bool):
        def hook(module, _args, output):
            if module.training or not only_training:
                self.outputs[index] = output
        return hook

    def pop(self) -> List[torch.Tensor]:
        missing = [i for i in self.indices if i not in self.outputs]
        if missing:
            raise RuntimeError(f"no hidden states recorded for layers {missing}")
        outputs = [self.outputs[i] for i in self.indices]
        self.outputs = {}
        return outputs

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class HiddenStateProjection(nn.Module):
    """One learned linear map per distilled layer: student width -> teacher width."""

    def __init__(self, student_width: int, teacher_width: int, count: int, kept_channels: Optional[List[int]] = None):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(student_width, teacher_width, bias=False) for _ in range(count))
        if kept_channels is not None:
            # a sliced student's channel j is the teacher's channel kept_channels[j]: start from that
            with torch.no_grad():
                for linear in self.maps:
                    linear.weight.zero_()
                    linear.weight[torch.as_tensor(kept_channels), torch.arange(student_width)] = 1.0

    def forward(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.maps[index](hidden)


def teacher_layer_indices(student_layers: Sequence[int], student_depth: int, teacher_depth: int,
                          plan: Optional[PruningPlan] = None) -> List[int]:
    """The teacher layer each student layer is compared with: its source layer when the student was
    pruned from this teacher (``plan``), else the layer at the same relative depth."""
    if plan is not None:
        return [plan.layers[i].source_index for i in student_layers]
    return [round((i + 1) * teacher_depth / student_depth) - 1 for i in student_layers]


def _empty_teacher(config) -> LlamaForCausalLM:
    """A teacher without weights: decoder layers on the meta device (FSDP materialises them one
    unit at a time), the embedding, final norm and head in (uninitialised) host memory, tied as in
    the real model so that every rank's FSDP root unit has the same parameters."""
    teacher = LlamaForCausalLM.empty(config, device="meta")
    for module in (teacher.model.embed_tokens, teacher.model.norm, teacher.lm_head):
        module.to_empty(device="cpu")
    if config.tie_word_embeddings:
        teacher.lm_head.weight = teacher.model.embed_tokens.weight
    return teacher


def load_teacher(teacher: Union[str, LlamaForCausalLM]) -> LlamaForCausalLM:
    if isinstance(teacher, LlamaForCausalLM):
        return teacher
    from llmshearing.convert.sources import load_model

    if not teacher:
        raise ConfigError("teacher.path is not set: give the teacher model (HF dir, .gguf or Composer checkpoint)")
    return load_model(teacher)


class Distillation(Algorithm):
    def __init__(
        self,
        teacher: Union[str, LlamaForCausalLM],
        *,
        temperature: float = 1.0,
        alpha: float = 0.0,
        hidden_weight: float = 0.0,
        hidden_layers: Sequence[int] = (-1,),
        hidden_loss: str = "cosine",
        teacher_dtype: str = "auto",
        plan: Optional[PruningPlan] = None,
    ):
        if temperature <= 0:
            raise ConfigError(f"teacher.temperature must be positive, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"teacher.alpha (weight of the LM loss) must be in [0, 1], got {alpha}")
        if hidden_weight < 0:
            raise ConfigError(f"teacher.hidden_weight must be >= 0, got {hidden_weight}")
        self.teacher_source = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.hidden_weight = hidden_weight
        self.hidden_layers = list(hidden_layers)
        self.hidden_loss = hidden_loss
        self.teacher_dtype = teacher_dtype
        self.plan = plan
        self.teacher: Optional[LlamaForCausalLM] = None
        self.read_teacher_files = False  # whether this rank loaded the teacher's weights itself
        self._student_outputs: Optional[LayerOutputs] = None
        self._teacher_outputs: Optional[LayerOutputs] = None
        self._sync: Optional[ReplicaSync] = None

    def match(self, event: Event, state: State) -> bool:
        return event in (Event.INIT, Event.FIT_START, Event.AFTER_LOSS, Event.AFTER_TRAIN_BATCH, Event.FIT_END)

    def apply(self, event: Event, state: State, logger: Logger) -> None:
        if event == Event.INIT:
            self._attach(state)
        elif event == Event.FIT_START and self._student_outputs is not None:
            self._sync = ReplicaSync.start(state, composer_model(state).distill_projection)
        elif event == Event.AFTER_LOSS:
            state.loss = self._distillation_loss(state)
        elif event == Event.AFTER_TRAIN_BATCH and self._sync is not None:
            self._sync.average_gradients()
        elif event == Event.FIT_END:
            self._detach(state)

    # ---------------------------------------------------------------------------------------
    def _attach(self, state: State) -> None:
        student = composer_model(state).model
        self.teacher = self._prepare_teacher(self._load_teacher(state), state)
        if self.teacher.config.vocab_size != student.config.vocab_size:
            raise ConfigError(f"the teacher's vocabulary ({self.teacher.config.vocab_size} tokens) differs from "
                              f"the student's ({student.config.vocab_size}): distillation needs the same tokenizer")
        log.info("distillation: teacher %s, temperature %s, alpha %s, hidden_weight %s",
                 self.teacher_source if isinstance(self.teacher_source, str) else "(in memory)",
                 self.temperature, self.alpha, self.hidden_weight)
        if self.hidden_weight > 0:
            self._attach_hidden_states(state, student)
        composer_model(state).distillation_head = self.student_head

    def _load_teacher(self, state: State) -> LlamaForCausalLM:
        """The teacher with its weights; under FSDP on ranks other than 0 the same model, empty."""
        sharded_from_rank_zero = (not isinstance(self.teacher_source, LlamaForCausalLM)
                                  and state.fsdp_config is not None and dist.get_world_size() > 1)
        self.read_teacher_files = not sharded_from_rank_zero or dist.get_global_rank() == 0
        if not sharded_from_rank_zero:
            return load_teacher(self.teacher_source)
        teacher = load_teacher(self.teacher_source) if self.read_teacher_files else None
        config = [teacher.config if teacher is not None else None]
        dist.broadcast_object_list(config, src=0)
        return teacher if teacher is not None else _empty_teacher(config[0])

    def _prepare_teacher(self, teacher: LlamaForCausalLM, state: State) -> nn.Module:
        teacher.requires_grad_(False)
        teacher.eval()
        if isinstance(self.teacher_source, LlamaForCausalLM):
            return teacher  # a model object is used as given
        dtype = TEACHER_DTYPES[self.teacher_dtype]
        if dtype is None:
            dtype = torch.bfloat16 if isinstance(state.device, DeviceGPU) else torch.float32
        cast_parameters(teacher, dtype)
        if state.fsdp_config is not None:
            return shard_frozen(teacher, state, DecoderLayer)
        return state.device.module_to_device(teacher)

    def _usable_plan(self, student: LlamaForCausalLM) -> Optional[PruningPlan]:
        plan, teacher = self.plan, self.teacher.config
        if plan is None:
            return None
        source = plan.source
        if (source.hidden_size, source.num_hidden_layers) != (teacher.hidden_size, teacher.num_hidden_layers) or \
                len(plan.layers) != student.config.num_hidden_layers:
            log.warning("the student's pruning plan does not match this teacher; layers are paired by relative depth")
            return None
        return plan

    def _attach_hidden_states(self, state: State, student: LlamaForCausalLM) -> None:
        depth = student.config.num_hidden_layers
        try:
            layers = sorted({range(depth)[i] for i in self.hidden_layers})
        except IndexError as exc:
            raise ConfigError(f"teacher.hidden_layers {self.hidden_layers} out of range for a student "
                              f"with {depth} layers") from exc
        plan = self._usable_plan(student)
        teacher_layers = teacher_layer_indices(layers, depth, self.teacher.config.num_hidden_layers, plan)
        projection = HiddenStateProjection(student.config.hidden_size, self.teacher.config.hidden_size, len(layers),
                                           plan.kept_hidden if plan is not None else None)
        projection = attach_replicated(state, "distill_projection", projection)
        if not state.optimizers:
            raise ConfigError("distillation with hidden_weight > 0 needs an optimizer passed to the Trainer")
        state.optimizers[0].add_param_group({"params": list(projection.parameters()), "weight_decay": 0.0})
        self._student_outputs = LayerOutputs(student.model.layers, layers, only_training=True)
        self._teacher_outputs = LayerOutputs(self.teacher.model.layers, teacher_layers, only_training=False)
        log.info("hidden-state distillation: student layers %s <-> teacher layers %s", layers, teacher_layers)

    def _detach(self, state: State) -> None:
        for outputs in (self._student_outputs, self._teacher_outputs):
            if outputs is not None:
                outputs.remove()
        composer_model(state).distillation_head = None

    def student_head(self, input_ids: torch.Tensor, targets: torch.Tensor, chunk_tokens: int) -> Callable:
        """The head of the student's forward for one training micro-batch (``LlamaForCausalLM.forward(head=)``)."""
        temperature, alpha = self.temperature, self.alpha

        def head(hidden: torch.Tensor, weight: torch.Tensor) -> LossHeadOutput:
            hidden = hidden[:, :-1]
            device = hidden.device
            scored = targets.to(device)
            tokens = (scored != IGNORE_INDEX).sum()
            autocast = (torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))

            lm_scale = alpha / tokens if alpha > 0 else None
            kd_scale = (1.0 - alpha) * temperature ** 2 / tokens if alpha < 1 else None

            def with_teacher(teacher_hidden: torch.Tensor, teacher_weight: torch.Tensor):
                # back in the student's grad and autocast modes, inside the teacher's forward
                with torch.enable_grad(), torch.autocast(device.type, dtype=autocast[1], enabled=autocast[0]):
                    return head_losses(hidden, weight, scored, chunk_tokens=chunk_tokens, lm_scale=lm_scale,
                                       teacher_hidden=teacher_hidden[:, :-1].to(device),
                                       teacher_weight=teacher_weight.to(device), temperature=temperature,
                                       kd_scale=kd_scale)

            # the teacher's own forward runs as before: no gradients (so its FSDP units stay out of the
            # backward pass) and no autocast (its own dtype)
            with torch.no_grad(), torch.autocast(device.type, enabled=False):
                losses = self.teacher(input_ids.to(self._teacher_device()), head=with_teacher)
            token_nll = losses.token_nll.view(scored.shape)
            kd = losses.token_kl.sum() / tokens * temperature ** 2
            return LossHeadOutput(losses.objective, token_nll.sum(), tokens, token_nll, kd)

        return head

    def _teacher_device(self) -> torch.device:
        return next(self.teacher.parameters()).device

    def _distillation_loss(self, state: State) -> dict:
        if isinstance(state.outputs, LossHeadOutput):
            return self._with_hidden_term(state, self._streamed_terms(state))
        ids = state.batch["input_ids"]
        with torch.no_grad():
            teacher_logits = self.teacher(ids.to(next(self.teacher.parameters()).device))
        valid = next_token_targets(state.batch) != IGNORE_INDEX
        kd = logit_kl(state.outputs[:, :-1], teacher_logits[:, :-1].to(state.outputs.device),
                      self.temperature, valid)
        if isinstance(state.loss, dict):  # keep other terms (e.g. a Lagrangian) and replace the LM term
            loss, lm = dict(state.loss), state.loss.get("lm", state.loss["total"])
            others = loss["total"] - lm if "lm" in loss else 0.0
        else:
            loss, lm, others = {}, state.loss, 0.0
        total = others + self.alpha * lm + (1.0 - self.alpha) * kd
        return self._with_hidden_term(state, {**loss, "lm": lm, "kd": kd, "total": total})

    @staticmethod
    def _streamed_terms(state: State) -> dict:
        """The student's loss already is alpha * LM + (1 - alpha) * KD (its head ran the teacher): the
        total stays, and the LM and KD terms are reported on their own."""
        outputs = state.outputs
        if outputs.kd is None:
            raise RuntimeError("the student's forward ran without its distillation head")
        loss = dict(state.loss) if isinstance(state.loss, dict) else {"total": state.loss}
        return {**loss, "lm": outputs.lm_loss, "kd": outputs.kd}

    def _with_hidden_term(self, state: State, loss: dict) -> dict:
        if self._student_outputs is None:
            return loss
        hidden = self._hidden_loss(state)
        return {**loss, "hidden": hidden, "total": loss["total"] + self.hidden_weight * hidden}

    def _hidden_loss(self, state: State) -> torch.Tensor:
        projection = composer_model(state).distill_projection
        pairs = zip(self._student_outputs.pop(), self._teacher_outputs.pop())
        losses = [hidden_state_loss(projection(k, student), teacher.to(student.device), self.hidden_loss)
                  for k, (student, teacher) in enumerate(pairs)]
        return torch.stack(losses).mean()


def distillation_from_config(section, student_path: Optional[str] = None) -> Distillation:
    """The algorithm for a yaml ``teacher:`` section; a student exported by a pruning method brings
    its ``pruning_plan.json``, which pairs its layers and channels with the teacher's."""
    from pathlib import Path

    from llmshearing.plan import PLAN_FILE

    plan_path = Path(student_path) / PLAN_FILE if student_path else None
    plan = PruningPlan.load(plan_path) if plan_path is not None and plan_path.is_file() else None
    return Distillation(
        section.path, temperature=section.temperature, alpha=section.alpha, hidden_weight=section.hidden_weight,
        hidden_layers=section.hidden_layers, hidden_loss=section.hidden_loss, teacher_dtype=section.dtype, plan=plan,
    )
