"""Draw the domain loading weights over a run (a step function: weights hold until the next update)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def draw_domain_weights(steps: Sequence[int], weights: np.ndarray, domains: Sequence[str],
                        path: Path) -> Path:
    """``weights[i]`` holds from ``steps[i]`` on; the last row closes the plot at the last step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for column, domain in enumerate(domains):
        ax.step(steps, weights[:, column], where="post", label=domain)
    ax.set(xlabel="step", ylabel="domain loading weight", ylim=(0, 1.02),
           title="Dynamic batch loading: domain weights")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
