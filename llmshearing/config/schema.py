"""The yaml schema of a training run (pruning, continued pre-training). Unknown keys are errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class ModelSection:
    # HF dir, .gguf file, Composer checkpoint, the shortcut "smollm2", or null for random init
    path: Optional[str] = None
    # LlamaConfig values: the whole config for random init, or overrides (e.g. attn_impl) otherwise
    config: Dict[str, Any] = field(default_factory=dict)
    gradient_checkpointing: bool = False


@dataclass
class DataSection:
    path: Optional[str] = None  # corpus dir: <domain>/train, <domain>/eval MDS shards
    domains: Optional[List[str]] = None  # default: every domain in the corpus manifest
    proportions: Optional[List[float]] = None  # static mixture; default: uniform
    seq_len: int = 4096
    num_workers: int = 0
    eval_max_batches: Optional[int] = None  # per domain and evaluation; null = whole eval split


@dataclass
class PruningSection:
    target: Dict[str, int] = field(default_factory=dict)  # HF config words; missing = unchanged
    mask_lr: float = 1.0
    lag_lr: float = 1.0
    warmup_fraction: float = 0.2  # of max_duration, target sparsity ramps linearly
    init_mean: float = 5.0
    init_std: float = 0.01
    block_masks: bool = False


@dataclass
class OptimizerSection:
    lr: float = 1.0e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1.0e-8
    weight_decay: float = 0.0


@dataclass
class SchedulerSection:
    name: str = "cosine"  # constant | linear | cosine
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
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    global_train_batch_size: int = 32
    device_train_microbatch_size: int = 4
    device_eval_batch_size: int = 8
    max_duration: str = "3200ba"
    eval_interval: str = "50ba"
    eval_first: bool = False
    precision: str = "fp32"  # fp32 | amp_bf16 | amp_fp16
    device: Optional[str] = None  # cpu | gpu; default: gpu when available
    fsdp: Optional[Dict[str, Any]] = None  # passed to Composer as parallelism_config.fsdp
    save_folder: Optional[str] = None
    save_interval: str = "500ba"
    save_num_checkpoints_to_keep: int = -1
    save_overwrite: bool = False
    autoresume: bool = False
    load_path: Optional[str] = None
    load_weights_only: bool = False
    loggers: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # name -> kwargs
    console_log_interval: str = "10ba"
    progress_bar: bool = False
    mask_plot: bool = True
    python_log_level: str = "info"
