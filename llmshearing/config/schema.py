"""The yaml schema of a training run (pruning, continued pre-training). Unknown keys are errors.

A field made with ``one_of`` takes only the values it lists; config/load.py checks them all once, when
the yaml is read, and names the allowed values in the error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

LOSS_KERNELS = ("torch", "liger")
TRAIN_SPLITS = ("train", "cpt")
TEACHER_HIDDEN_LOSSES = ("cosine", "mse")
TEACHER_DTYPES = ("auto", "float32", "bfloat16")
DYNAMIC_MODES = ("dynamic", "static")
LOSS_SOURCES = ("eval", "train")
SCHEDULERS = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "amp_bf16", "amp_fp16")
DEVICES = ("cpu", "gpu")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def one_of(default: Optional[str], choices: tuple, optional: bool = False):
    """A field whose value must be one of ``choices`` (or null, when ``optional``)."""
    return field(default=default, metadata={"choices": choices, "optional": optional})


@dataclass
class ModelSection:
    # HF dir, .gguf file, Composer checkpoint, the shortcut "smollm2", or null for random init
    path: Optional[str] = None
    # LlamaConfig values: the whole config for random init, or overrides (e.g. attn_impl) otherwise
    config: Dict[str, Any] = field(default_factory=dict)
    gradient_checkpointing: bool = False
    # tokens whose logits the loss head holds at once (model/loss_head.py): about loss_chunk_tokens x vocab x 4
    # bytes per buffer; 0 = the whole micro-batch's logits, the unchunked loss
    loss_chunk_tokens: int = 512
    # torch | liger: liger-kernel's fused linear cross-entropy for the LM loss where it is installed and on a
    # GPU (per-token losses are then unavailable: not with dynamic_loading.loss_source train)
    loss_kernel: str = one_of("torch", LOSS_KERNELS)


@dataclass
class DataSection:
    path: Optional[str] = None  # corpus dir: <domain>/train, <domain>/eval MDS shards
    remote: Optional[str] = None  # remote corpus (s3://, gs://, hf://, ... or a dir); data.path caches it
    domains: Optional[List[str]] = None  # default: every domain in the corpus manifest
    proportions: Optional[List[float]] = None  # static mixture; default: uniform
    seq_len: int = 4096
    # the split trained on: train, or cpt (the second disjoint train split `prepare --cpt-tokens` writes,
    # so continued pre-training sees other documents than pruning did)
    train_split: str = one_of("train", TRAIN_SPLITS)
    num_workers: int = 0
    eval_max_batches: Optional[int] = None  # per domain and evaluation; null = whole eval split


@dataclass
class PruningSection:
    target: Dict[str, int] = field(default_factory=dict)  # HF config words; missing = unchanged
    # null: 1.0 (the paper's) from a cold start, 0.1 from a warm start (L0Pruning says why)
    mask_lr: Optional[float] = None
    lag_lr: Optional[float] = None
    warmup_fraction: float = 0.2  # of max_duration, target sparsity ramps linearly
    init_mean: float = 5.0
    init_std: float = 0.01
    block_masks: bool = False
    per_rank_masks: bool = False  # each rank samples its own masks (reference); false: all ranks the same
    # a Minitron importance.json (or the `prune minitron` output dir holding it): the gates start ordered
    # by it, the one-shot selection above warm_start_centre, the rest below (sheared/warm_start.py)
    warm_start: Optional[str] = None
    warm_start_spread: float = 160.0  # log_alpha distance between a row's most and least important unit
    warm_start_centre: Optional[float] = None  # log_alpha at the cut; null: where a gate is open half the time (-1.6)
    # expected sizes count a gate at the log_alpha floor as shut (true), or as the reference does, at
    # P(gate > 0) = 0.047 (false), which leaves kept gates half shut at high prune ratios (HardConcrete.keep_score)
    normalized_keep_scores: bool = True
    # log_alpha's clamp range; null: the reference's [log 0.01, log 100] (-4.6, 4.6) from a cold start,
    # [log 1e-4, log 1e4] (-9.2, 9.2) with warm_start. A gate at the floor is open (> 0) in 4.7 % of
    # the samples at -4.6, 0.05 % at -9.2
    log_alpha_range: Optional[List[float]] = None


@dataclass
class TeacherSection:
    """Knowledge distillation from a frozen teacher (llmshearing/composer/distillation.py)."""

    path: Optional[str] = None  # HF dir, .gguf, Composer checkpoint or "smollm2"
    temperature: float = 1.0
    alpha: float = 0.0  # weight of the LM loss; the logit KL gets 1 - alpha
    hidden_weight: float = 0.0  # intermediate hidden-state loss (through learned projections); 0 = off
    hidden_layers: List[int] = field(default_factory=lambda: [-1])  # student layers (negative = from the end)
    hidden_loss: str = one_of("cosine", TEACHER_HIDDEN_LOSSES)
    dtype: str = one_of("auto", TEACHER_DTYPES)  # auto: bf16 on GPU, fp32 on CPU


@dataclass
class DynamicLoadingSection:
    """Sheared LLaMA's dynamic batch loading (data.domains / data.proportions give the initial mix)."""

    mode: str = one_of("dynamic", DYNAMIC_MODES)  # static: same loader and loss logging, weights never change
    update_interval: int = 50  # steps between weight updates (paper: 50 pruning, 400 CPT)
    reference_losses: Dict[str, float] = field(default_factory=dict)  # domain -> target loss
    reference_losses_file: Optional[str] = None  # JSON from python -m llmshearing.data.reference_loss
    eta: float = 1.0  # step size of the exponentiated update
    smoothing: float = 1.0e-4  # c in w = (1 - c) alpha / sum(alpha) + c / k
    # eval: eval splits, loss_batches per domain; train: the training batches
    loss_source: str = one_of("eval", LOSS_SOURCES)
    loss_batches: int = 1  # eval batches (device_eval_batch_size) per domain, rank and update (train: unsampled domains)
    max_repeats: Optional[int] = None  # stop drawing a domain repeated this often; null = no cap
    plot: bool = True  # domain_weights.png in save_folder at the end


@dataclass
class OptimizerSection:
    lr: float = 1.0e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1.0e-8
    weight_decay: float = 0.0


@dataclass
class SchedulerSection:
    name: str = one_of("cosine", SCHEDULERS)
    t_warmup: str = "0ba"
    alpha_f: float = 0.1


@dataclass
class TrainConfig:
    run_name: Optional[str] = None
    seed: int = 17
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: Optional[str] = None  # default: model.path when it is an HF dir or .gguf
    data: DataSection = field(default_factory=DataSection)
    pruning: Optional[PruningSection] = None
    dynamic_loading: Optional[DynamicLoadingSection] = None  # set: dynamic batch loading
    teacher: Optional[TeacherSection] = None  # set: the student is trained by distillation from it
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    global_train_batch_size: int = 32
    device_train_microbatch_size: int = 4
    device_eval_batch_size: int = 8
    max_duration: str = "3200ba"
    eval_interval: str = "50ba"
    precision: str = one_of("fp32", PRECISIONS)
    device: Optional[str] = one_of(None, DEVICES, optional=True)  # null: gpu when available
    fsdp: Optional[Dict[str, Any]] = None  # passed to Composer as parallelism_config.fsdp
    save_folder: Optional[str] = None  # a local folder or a remote one (s3://, gs://, oci://, libcloud://, ...)
    # keyword arguments of the object store of a remote save_folder, beyond what its URI says
    # (Composer's RemoteUploader backend_kwargs: e.g. libcloud provider / provider_kwargs, S3 endpoint_url)
    save_backend_kwargs: Dict[str, Any] = field(default_factory=dict)
    save_interval: str = "500ba"
    save_num_checkpoints_to_keep: int = -1
    save_overwrite: bool = False
    autoresume: bool = False
    load_path: Optional[str] = None
    load_weights_only: bool = False
    verify_checkpoint: bool = True  # check every CRC of the local checkpoint to load first (~1 s/GB)
    loggers: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # name -> kwargs
    console_log_interval: str = "10ba"
    progress_bar: bool = False
    mask_plot: bool = True
    python_log_level: str = one_of("info", LOG_LEVELS)
