"""L0Module: Sheared-LLaMA's learned masks that prune a source model to a given target shape.

One hard-concrete gate tensor per structure that the target shrinks:

    layer        [L]          whole layers              (target num_hidden_layers < L)
    kv_group     [L, n_kv]    KV heads with their query heads (target num_key_value_heads < n_kv)
    head         [L, n_heads] query heads within KV groups (target heads per group < source's)
    intermediate [L, d_ff]    MLP neurons
    hidden       [d]          model channels

Optional block gates ``head_layer`` / ``mlp`` [L] (``block_masks=True``) scale a layer's attention
or MLP block. They never remove a block on their own and are not part of the expected-size
bookkeeping: a uniform LLaMA config has no way to express "layer 5 has no MLP", so a sliced model
can only drop whole layers; the gates only contribute their soft value as a learned block scale.

Training mode samples masks (from the module's own :class:`NoiseStream`, checkpointed with it, so
a resumed run samples the same masks as an uninterrupted one); eval mode gives the deterministic
masks that keep exactly the target counts, i.e. what ``make_plan()`` slices
(``make_plan().to_masks()`` equals ``forward()`` in eval). The module's extra state, in every
checkpoint, holds what the masks were learned for, the noise stream's position and that plan.
The Lagrangian keeps each structure's expected kept fraction on its (warmed-up) target.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from llmshearing.errors import CheckpointError, ConfigError
from llmshearing.model.config import LlamaConfig
from llmshearing.plan import PLAN_STATE_KEY, WARNING_KEY, LayerPlan, PruningPlan
from llmshearing.shape import TargetShape, count_parameters
from llmshearing.sheared.convergence import convergence_warning, mask_convergence
from llmshearing.sheared.hard_concrete import DEFAULT_LOG_ALPHA_RANGE, HardConcrete
from llmshearing.sheared.noise import NoiseStream

SIZED_STRUCTURES = ("layer", "kv_group", "head", "intermediate", "hidden")
BLOCK_GATES = ("head_layer", "mlp")
# model mask name -> the gates it is made of
MASK_SOURCES = {
    "layer_z": ("layer",),
    "head_layer_z": ("head_layer",),
    "head_z": ("head", "kv_group"),
    "mlp_z": ("mlp",),
    "intermediate_z": ("intermediate",),
    "hidden_z": ("hidden",),
}


class _GradientAscent(torch.autograd.Function):
    """Identity forward, negated gradient: a minimising optimiser then maximises the input."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


@dataclass
class _Selection:
    """The deterministic choice: which units are kept and their values (all full source shapes)."""

    layer_keep: torch.Tensor  # [L] bool
    kv_keep: torch.Tensor  # [L, n_kv] bool
    head_keep: torch.Tensor  # [L, n_heads] bool (only heads of kept KV groups)
    neuron_keep: torch.Tensor  # [L, d_ff] bool
    hidden_keep: torch.Tensor  # [d] bool
    head_value: torch.Tensor  # [L, n_heads] head × KV-group soft value
    neuron_value: torch.Tensor  # [L, d_ff]
    hidden_value: torch.Tensor  # [d]
    attn_value: torch.Tensor  # [L] layer × head_layer soft value
    mlp_value: torch.Tensor  # [L] layer × mlp soft value

    def to(self, device) -> "_Selection":
        return _Selection(**{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)})


def _top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries along the last dimension; of tied entries the lower index
    is kept. Ties are common (gates clamped to the same bound), and topk's choice among them depends
    on the device and the torch version."""
    indices = scores.sort(dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, indices, True)


def _indices(keep: torch.Tensor) -> List[int]:
    return keep.nonzero().flatten().tolist()


RUNTIME_FIELDS = ("attn_impl",)  # how the model runs, not what it is: may differ between a run and its resume


def _runtime_free(config: dict) -> dict:
    """Config entries that describe the model, without runtime choices such as attn_impl. The family
    fields (model_type, biases, q/k norms, sliding windows) describe the model: they are compared too;
    a config saved before a field existed has that field's default (as ``LlamaConfig.from_dict`` reads it)."""
    defaults = {f.name: f.default for f in dataclasses.fields(LlamaConfig) if f.default is not dataclasses.MISSING}
    return {k: v for k, v in {**defaults, **config}.items() if k not in RUNTIME_FIELDS}


class L0Module(nn.Module):
    def __init__(
        self,
        source: LlamaConfig,
        target: TargetShape,
        *,
        init_mean: float = 5.0,
        init_std: float = 0.01,
        block_masks: bool = False,
        lagrangian_warmup_steps: int = 0,
        log_alpha_range: Tuple[float, float] = DEFAULT_LOG_ALPHA_RANGE,
        normalized_keep_scores: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        target.validate_against(source)
        if lagrangian_warmup_steps < 0:
            raise ConfigError(f"lagrangian_warmup_steps must be >= 0, got {lagrangian_warmup_steps}")
        self.source = source
        self.target = target
        self.lagrangian_warmup_steps = int(lagrangian_warmup_steps)
        # True: a gate at the clamp's floor counts as shut in the expected sizes (HardConcrete.keep_score);
        # False: the reference's P(gate > 0), which keeps ~0.047 of every shut gate
        self.normalized_keep_scores = bool(normalized_keep_scores)
        n_layers = source.num_hidden_layers
        self.gate_shapes: Dict[str, Tuple[int, ...]] = {
            "layer": (n_layers,),
            "kv_group": (n_layers, source.num_key_value_heads),
            "head": (n_layers, source.num_attention_heads),
            "intermediate": (n_layers, source.intermediate_size),
            "hidden": (source.hidden_size,),
            "head_layer": (n_layers,),
            "mlp": (n_layers,),
        }
        shrinks = {
            "layer": target.num_hidden_layers < source.num_hidden_layers,
            "kv_group": target.num_key_value_heads < source.num_key_value_heads,
            "head": target.query_groups < source.query_groups,
            "intermediate": target.intermediate_size < source.intermediate_size,
            "hidden": target.hidden_size < source.hidden_size,
        }
        self.structures: Tuple[str, ...] = tuple(name for name in SIZED_STRUCTURES if shrinks[name])
        gate_names = self.structures + (BLOCK_GATES if block_masks else ())
        make_gate = partial(HardConcrete, init_mean=init_mean, init_std=init_std, log_alpha_range=log_alpha_range)
        self.gates = nn.ModuleDict({name: make_gate(self.gate_shapes[name]) for name in gate_names})
        self.lambda_1 = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in self.structures})
        self.lambda_2 = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in self.structures})
        # where the target warm-up starts: the full source, or the masks' own expected sizes (anchor_ramp)
        self.ramp_start: Dict[str, float] = {name: 1.0 for name in self.structures}
        # follows .to(device) even when nothing is pruned and the module has no parameters
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        self.noise = NoiseStream(seed)

    # ---- helpers ----------------------------------------------------------------------------
    def _per_gate(self, values: Callable[[HardConcrete], torch.Tensor]) -> Dict[str, torch.Tensor]:
        """``values(gate)`` for every gate; ones (keep everything) where a structure is not pruned."""
        device = self._device_anchor.device
        return {
            name: values(self.gates[name]) if name in self.gates else torch.ones(shape, device=device)
            for name, shape in self.gate_shapes.items()
        }

    def expand_groups(self, per_group: torch.Tensor) -> torch.Tensor:
        """[L, n_kv] -> [L, n_heads]: query head h belongs to KV group h // query_groups."""
        return per_group.repeat_interleave(self.source.query_groups, dim=1)

    def final_fraction(self, name: str) -> float:
        source, target = self.source, self.target
        kept, total = {
            "layer": (target.num_hidden_layers, source.num_hidden_layers),
            "kv_group": (target.num_key_value_heads, source.num_key_value_heads),
            "head": (target.num_attention_heads, source.num_attention_heads),
            "intermediate": (target.intermediate_size, source.intermediate_size),
            "hidden": (target.hidden_size, source.hidden_size),
        }[name]
        return kept / total

    # ---- masks --------------------------------------------------------------------------------
    def forward(self) -> Dict[str, torch.Tensor]:
        """Masks for ``LlamaForCausalLM.forward(masks=...)``: sampled in training, deterministic in eval."""
        return self.sample_masks() if self.training else self.deterministic_masks()

    def sample_masks(self) -> Dict[str, torch.Tensor]:
        # masks are sampled from in-range log_alpha only, as the reference clamps before every forward;
        # creation and L0Pruning (after each step) clamp too, this catches values loaded or set since
        self.clamp_()
        generator = self.noise.next_generator(self._device_anchor.device)
        z = self._per_gate(lambda gate: gate.sample(generator))
        masks = {
            "layer_z": z["layer"],
            "head_layer_z": z["head_layer"],
            "head_z": z["head"] * self.expand_groups(z["kv_group"]),
            "mlp_z": z["mlp"],
            "intermediate_z": z["intermediate"],
            "hidden_z": z["hidden"],
        }
        # masks made only of unpruned structures are all ones: leave them out
        return {name: mask for name, mask in masks.items() if any(g in self.gates for g in MASK_SOURCES[name])}

    def deterministic_masks(self) -> Dict[str, torch.Tensor]:
        """Dense masks keeping exactly the target counts; same values as ``make_plan().to_masks()``."""
        sel = self.selection()
        layer = sel.layer_keep.float()
        return {
            "layer_z": layer,
            "head_layer_z": sel.attn_value * layer,
            "head_z": sel.head_value * sel.head_keep * layer[:, None],
            "mlp_z": sel.mlp_value * layer,
            "intermediate_z": sel.neuron_value * sel.neuron_keep * layer[:, None],
            "hidden_z": sel.hidden_value * sel.hidden_keep,
        }

    @torch.no_grad()
    def selection(self) -> _Selection:
        """Which units the deterministic masks (and the plan) keep, and their soft values."""
        # unpruned structures have all-ones scores and a target count equal to the source count,
        # so the same top-k code keeps all of their units
        source, target = self.source, self.target
        n_layers, n_kv = source.num_hidden_layers, source.num_key_value_heads
        log_alpha = self._per_gate(lambda gate: gate.log_alpha)
        soft = self._per_gate(HardConcrete.soft_values)
        kv_keep = _top_k(log_alpha["kv_group"], target.num_key_value_heads)
        heads_by_group = log_alpha["head"].view(n_layers, n_kv, source.query_groups)
        head_in_group = _top_k(heads_by_group, target.query_groups).view(n_layers, -1)
        return _Selection(
            layer_keep=_top_k(log_alpha["layer"], target.num_hidden_layers),
            kv_keep=kv_keep,
            head_keep=head_in_group & self.expand_groups(kv_keep),
            neuron_keep=_top_k(log_alpha["intermediate"], target.intermediate_size),
            hidden_keep=_top_k(log_alpha["hidden"], target.hidden_size),
            head_value=soft["head"] * self.expand_groups(soft["kv_group"]),
            neuron_value=soft["intermediate"],
            hidden_value=soft["hidden"],
            attn_value=soft["layer"] * soft["head_layer"],
            mlp_value=soft["layer"] * soft["mlp"],
        )

    def make_plan(self) -> PruningPlan:
        """The final deterministic masks as a PruningPlan (soft values become the plan's scales)."""
        sel = self.selection().to("cpu")
        pruned = set(self.gates)

        def scales(values: torch.Tensor, keep: torch.Tensor, *gates: str) -> Optional[List[float]]:
            return values[keep].tolist() if pruned.intersection(gates) else None

        layers = [
            LayerPlan(
                source_index=i,
                kept_kv_heads=_indices(sel.kv_keep[i]),
                kept_heads=_indices(sel.head_keep[i]),  # increasing index = ordered by KV group
                kept_neurons=_indices(sel.neuron_keep[i]),
                head_scale=scales(sel.head_value[i], sel.head_keep[i], "head", "kv_group"),
                neuron_scale=scales(sel.neuron_value[i], sel.neuron_keep[i], "intermediate"),
                attn_scale=float(sel.attn_value[i]),
                mlp_scale=float(sel.mlp_value[i]),
            )
            for i in _indices(sel.layer_keep)
        ]
        convergence = mask_convergence(self, sel)
        warning = convergence_warning(convergence)
        plan = PruningPlan(
            source_config=self.source.to_dict(),
            kept_hidden=_indices(sel.hidden_keep),
            layers=layers,
            hidden_scale=scales(sel.hidden_value, sel.hidden_keep, "hidden"),
            method="sheared",
            metadata={"target_shape": self.target.to_dict(),
                      "mask_convergence": [entry.to_dict() for entry in convergence],
                      **({WARNING_KEY: warning} if warning else {})},
        )
        plan.validate()
        return plan

    # ---- expected sizes -------------------------------------------------------------------------
    def _expected_query_heads(self, scores: Dict[str, torch.Tensor]) -> torch.Tensor:
        """[L] expected query heads per layer: a head counts only if its KV group is kept too."""
        return (scores["head"] * self.expand_groups(scores["kv_group"])).sum(1)

    def expected_sizes(self) -> Dict[str, torch.Tensor]:
        """Differentiable expected fraction of the source kept, per pruned structure."""
        return {name: rows.mean() for name, rows in self.expected_row_fractions().items()}

    def keep_scores(self) -> Dict[str, torch.Tensor]:
        """How much every unit of every gate counts in the expected sizes (ones where a structure is
        not pruned): P(gate > 0), rescaled over the clamp range unless ``normalized_keep_scores`` is off."""
        return self._per_gate(HardConcrete.keep_score if self.normalized_keep_scores else HardConcrete.keep_probability)

    def expected_row_fractions(self) -> Dict[str, torch.Tensor]:
        """Expected kept fraction per row of each pruned structure: per layer for the structures the
        plan cuts to the same count in every layer (KV groups, query heads, neurons), one value for
        layers and hidden channels. Their mean over the rows is :meth:`expected_sizes`."""
        scores = self.keep_scores()
        rows = {
            "layer": scores["layer"].mean().reshape(1),
            "kv_group": scores["kv_group"].mean(1),
            "head": self._expected_query_heads(scores) / self.source.num_attention_heads,
            "intermediate": scores["intermediate"].mean(1),
            "hidden": scores["hidden"].mean().reshape(1),
        }
        return {name: rows[name] for name in self.structures}

    def target_fractions(self, step: Optional[int] = None) -> Dict[str, float]:
        """Target kept fraction per pruned structure: final, or at ``step`` of the warm-up, a linear
        ramp from ``ramp_start`` (1.0, the whole source, unless :meth:`anchor_ramp` moved it)."""
        final = {name: self.final_fraction(name) for name in self.structures}
        if step is None or self.lagrangian_warmup_steps == 0:
            return final
        progress = min(max(step, 0) / self.lagrangian_warmup_steps, 1.0)
        return {name: start - (start - final[name]) * progress for name, start in self.ramp_start.items()}

    @torch.no_grad()
    def anchor_ramp(self) -> None:
        """Start the target warm-up at the masks' current expected sizes: after a warm start, a ramp
        from the whole source would push the gates the warm start shut open again."""
        self.ramp_start = {name: max(float(value), self.final_fraction(name))
                           for name, value in self.expected_sizes().items()}

    def expected_parameters(self) -> torch.Tensor:
        """Differentiable expected parameter count (float64); exact when all scores are 0 or 1."""
        scores = {name: s.double() for name, s in self.keep_scores().items()}
        layer = scores["layer"]
        expected_layers = layer.sum()
        # count_parameters is (layers × per-layer size) with per-layer size linear in the head,
        # KV-head and neuron counts, so layer-score-weighted means give exactly Σ_l s_l · size_l
        weights = layer / expected_layers.clamp_min(1e-12)

        def layer_mean(per_layer: torch.Tensor) -> torch.Tensor:
            return (weights * per_layer).sum()

        return count_parameters(
            vocab_size=self.source.vocab_size,
            hidden_size=scores["hidden"].sum(),
            num_hidden_layers=expected_layers,
            num_attention_heads=layer_mean(self._expected_query_heads(scores)),
            num_key_value_heads=layer_mean(scores["kv_group"].sum(1)),
            intermediate_size=layer_mean(scores["intermediate"].sum(1)),
            head_dim=self.source.head_dim,
            tie_word_embeddings=self.source.tie_word_embeddings,
            **self.source.parameter_flags,
        )

    # ---- Lagrangian -------------------------------------------------------------------------------
    def lagrangian(self, step: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Σ_j mean_r [λ1_j (ŝ_jr − t_j) + λ2_j (ŝ_jr − t_j)²], and floats for logging.

        r runs over the rows of structure j (:meth:`expected_row_fractions`): the layers for KV
        groups, query heads and neurons, as in the reference implementation. The linear term is the
        same as on the whole structure's fraction; the quadratic one pulls every layer to the target
        on its own, since the plan keeps the same count in every layer: a constraint met only on
        average (one layer's gates open, another's shut) would leave the final top-k cutting open
        gates in the first and keeping shut ones in the second.

        The λ enter through a gradient-reversal op, so an optimiser minimising the total loss
        performs gradient ascent on them (the saddle point of the constrained problem). Doing it in
        the graph rather than with a hook on the λ parameters keeps working when FSDP replaces or
        flattens the parameter objects, or the module is deep-copied.
        """
        rows = self.expected_row_fractions()
        targets = self.target_fractions(step)
        loss = torch.zeros((), device=self._device_anchor.device)
        for name in self.structures:
            gap = rows[name] - targets[name]
            lambda_1 = _GradientAscent.apply(self.lambda_1[name])
            lambda_2 = _GradientAscent.apply(self.lambda_2[name])
            loss = loss + (lambda_1 * gap + lambda_2 * gap * gap).mean()
        expected = {name: row.mean() for name, row in rows.items()}
        return loss, self._lagrangian_details(expected, targets, loss)

    @torch.no_grad()
    def _lagrangian_details(self, expected, targets, loss) -> Dict[str, float]:
        keys, values = ["lagrangian", "expected_parameters"], [loss.detach().double(), self.expected_parameters()]
        for name in self.structures:
            keys += [f"expected_fraction/{name}", f"lambda_1/{name}", f"lambda_2/{name}"]
            values += [expected[name].double(), self.lambda_1[name].double(), self.lambda_2[name].double()]
        details = dict(zip(keys, torch.stack(values).tolist()))  # one device sync
        details.update({f"target_fraction/{name}": value for name, value in targets.items()})
        return details

    # ---- optimiser groups ---------------------------------------------------------------------------
    def mask_parameters(self) -> List[nn.Parameter]:
        return [gate.log_alpha for gate in self.gates.values()]

    def lagrangian_parameters(self) -> List[nn.Parameter]:
        return list(self.lambda_1.values()) + list(self.lambda_2.values())

    def clamp_(self) -> None:
        """Clamp every log_alpha to its range; call after each optimiser step (sampling does it too)."""
        for gate in self.gates.values():
            gate.clamp_()

    # ---- checkpoints --------------------------------------------------------------------------------
    def _identity(self) -> dict:
        """What the masks were learned for: masks learned for anything else must not load."""
        return {"source_config": self.source.to_dict(), "target_shape": self.target.to_dict()}

    def get_extra_state(self) -> dict:
        # the plan the masks give now: every checkpoint carries the plan of its own step, and export
        # slices with it (llmshearing/checkpoint_plan.py says why it lives in the state)
        return {**self._identity(), "noise": self.noise.state_dict(), PLAN_STATE_KEY: self.make_plan().to_dict()}

    def set_extra_state(self, state: dict) -> None:
        """Checks what the masks were learned for; the stored plan is ignored (the masks loaded
        beside it give it again)."""
        mine = self._identity()
        if _runtime_free(state.get("source_config", {})) != _runtime_free(mine["source_config"]):
            raise CheckpointError("the checkpoint's L0 masks were learned for another source model config")
        if state.get("target_shape") != mine["target_shape"]:
            raise CheckpointError(
                f"the checkpoint's L0 masks target {state.get('target_shape')}, "
                f"but this run targets {mine['target_shape']}"
            )
        if "noise" in state:  # absent in checkpoints written before the stream existed
            self.noise.load_state_dict(state["noise"])

    def extra_repr(self) -> str:
        return f"structures={self.structures}, target={self.target.to_dict()}"
