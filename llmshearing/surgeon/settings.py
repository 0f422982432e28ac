"""What an LLM Surgeon run does, checked before any model or data is loaded."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from llmshearing.errors import ConfigError
from llmshearing.surgeon.choices import (ALLOCATIONS, ATTENTION_UNITS, CURVATURE, CURVATURES, GLOBAL, HEAD, KFAC,
                                         MATRIX, MODES, SCORINGS, SEQUENTIAL, STRUCTURED, TWO_FOUR)

TWO_FOUR_DENSITY = 0.5


@dataclass
class SurgeonSettings:
    mode: str = STRUCTURED
    density: Optional[float] = None  # fraction of the layers' projection weights kept; 2:4 implies 0.5
    shots: int = 1
    uniform: bool = False  # structured: the same sizes in every layer (a plain LLaMA config), else per-layer sizes
    attention_unit: str = HEAD
    scoring: str = CURVATURE  # magnitude: F = I ⊗ I, the baseline
    damping: float = 0.01
    allocation: str = MATRIX  # 2:4/unstructured: each projection at the density (adaptive masks), or global
    row_scaled: bool = True  # allocation matrix: weight costs × 1/[G⁻¹]_ii (the output-side curvature)
    # 2:4/unstructured with allocation matrix: sequential (A layer by layer, the default there) or K-FAC G ⊗ A
    # (always for structured and the global allocation); None: the default for the mode and allocation
    curvature: Optional[str] = None
    factor_memory_gb: Optional[float] = None
    finetune_steps: int = 0
    finetune_lr: float = 1e-5
    progress: bool = True
    target: Optional[Dict[str, int]] = None  # structured: an exact uniform shape instead of a density
    _target_density: Optional[float] = field(default=None, repr=False)  # set by resolve_target

    def validate(self) -> "SurgeonSettings":
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.target is not None:
            self._validate_target()
        elif self.density is None:
            if self.mode != TWO_FOUR:
                raise ConfigError(f"--mode {self.mode} needs --density (the fraction of weights kept, in (0, 1])")
            self.density = TWO_FOUR_DENSITY
        if self.density is not None and not 0.0 < self.density <= 1.0:
            raise ConfigError(f"--density must be in (0, 1], got {self.density}")
        if self.mode == TWO_FOUR and self.density != TWO_FOUR_DENSITY:
            raise ConfigError(f"--mode 2:4 keeps exactly half of the weights: --density must be 0.5 "
                              f"(or left out), got {self.density}")
        if self.attention_unit not in ATTENTION_UNITS:
            raise ConfigError(f"--attention-unit must be one of {', '.join(ATTENTION_UNITS)}, got {self.attention_unit!r}")
        if self.allocation not in ALLOCATIONS:
            raise ConfigError(f"--allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")
        if self.curvature is None:
            self.curvature = SEQUENTIAL if self.mode != STRUCTURED and self.allocation == MATRIX else KFAC
        if self.curvature not in CURVATURES:
            raise ConfigError(f"--curvature must be one of {', '.join(CURVATURES)}, got {self.curvature!r}")
        if self.curvature == SEQUENTIAL and (self.mode == STRUCTURED or self.allocation == GLOBAL):
            raise ConfigError("--curvature sequential is for --mode 2:4/unstructured with --allocation matrix "
                              "(it estimates no costs of other layers)")
        if self.scoring not in SCORINGS:
            raise ConfigError(f"--scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        _at_least("--shots", self.shots, 1)
        _at_least("--finetune-steps", self.finetune_steps, 0)
        if self.damping <= 0:
            raise ConfigError(f"--damping must be positive, got {self.damping}")
        if self.finetune_lr <= 0:
            raise ConfigError(f"--finetune-lr must be positive, got {self.finetune_lr}")
        if self.factor_memory_gb is not None and self.factor_memory_gb <= 0:
            raise ConfigError(f"--factor-memory-gb must be positive, got {self.factor_memory_gb}")
        return self

    def _validate_target(self) -> None:
        if self.mode != STRUCTURED:
            raise ConfigError(f"--target is for --mode structured (--mode {self.mode} keeps the shape)")
        if self.density is not None and self.density != self._target_density:
            raise ConfigError("give --density or --target, not both (the target fixes the density)")
        self.uniform = True

    def resolve_target(self, config):
        """The counts ``--target`` keeps in every layer (None without one); sets the density from it."""
        if self.target is None:
            return None
        from llmshearing.surgeon.target import target_counts

        counts = target_counts(config, self.target, self.attention_unit)
        self.density = self._target_density = counts.density
        return counts

    @property
    def sequential(self) -> bool:
        """Layer-by-layer input factors (forward passes only) instead of a K-FAC pass."""
        return self.curvature == SEQUENTIAL and self.scoring == CURVATURE

    def schedule(self) -> List[float]:
        """Target density after each shot: linear from 1 to ``density``."""
        return [1.0 - (1.0 - self.density) * shot / self.shots for shot in range(1, self.shots + 1)]


def _at_least(option: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(f"{option} must be at least {low}, got {value}")
