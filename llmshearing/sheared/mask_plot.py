"""Record the expected mask sizes during pruning and draw them as a PNG at the end of the run
(into the run folder, local or remote, see run_artifacts.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from llmshearing.composer.distributed import composer_model
from llmshearing.composer.run_artifacts import RunArtifacts, as_run_artifacts


class MaskSizePlot(Callback):
    def __init__(self, folder: Union[str, RunArtifacts, None], filename: str = "mask_sizes.png", every: int = 1):
        self.folder = as_run_artifacts(folder)
        self.filename = filename
        self.every = max(1, every)
        self.steps: List[int] = []
        self.series: Dict[str, List[float]] = {}

    def batch_end(self, state: State, logger: Logger) -> None:
        l0 = getattr(composer_model(state), "l0", None)
        step = int(state.timestamp.batch)
        if l0 is None or step % self.every:
            return
        self.steps.append(step)
        targets = l0.target_fractions(step)
        with torch.no_grad():
            sizes = l0.expected_sizes()
        for name, value in sizes.items():
            self.series.setdefault(name, []).append(float(value))
            self.series.setdefault(f"{name} target", []).append(float(targets[name]))

    # the history travels in checkpoints, so a resumed run plots the whole run
    def state_dict(self) -> dict:
        return {"steps": list(self.steps), "series": {name: list(values) for name, values in self.series.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.steps = list(state.get("steps", []))
        self.series = {name: list(values) for name, values in state.get("series", {}).items()}

    def fit_end(self, state: State, logger: Logger) -> None:
        if self.folder and dist.get_global_rank() == 0 and self.steps:
            self.folder.write(self.filename, lambda path: draw_mask_sizes(self.steps, self.series, path), state, logger)


def draw_mask_sizes(steps, series, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in series.items():
        if name.endswith(" target"):
            continue
        line, = ax.plot(steps, values, label=name)
        target = series.get(f"{name} target")
        if target:
            ax.plot(steps, target, linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("expected fraction of source kept (dashed: target)")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="best", fontsize="small")
    ax.set_title("L0 mask sizes during pruning")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
