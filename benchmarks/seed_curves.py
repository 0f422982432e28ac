"""Pooled eval loss against training tokens, one panel per seed, from rows of several reproduce.py runs.

    python benchmarks/seed_curves.py --out curves.png \
        OUT17/rows/minitron_kd.json:17:"Minitron + KD" OUT17/rows/sheared_kd_warm_static.json:17:"Sheared, static" ...

Each argument is ROW_JSON:SEED:LABEL (a ``reproduce.py`` row file); rows with the same label share a
colour across panels, so a method can be followed from seed to seed. Each legend entry ends with the
row's final pooled perplexity (its ``eval``), the number the tables report.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

Line = Tuple[str, List[Tuple[int, float]], float]  # label, (tokens, pooled loss) points, final perplexity


def read_lines(specs: List[str]) -> Dict[str, List[Line]]:
    """{seed: [(label, curve points, final pooled perplexity)]} in argument order."""
    panels: Dict[str, List[Line]] = {}
    for spec in specs:
        path, seed, label = spec.split(":", 2)
        row = json.loads(Path(path).read_text())
        points = [(tokens, losses["all"]) for tokens, losses in row["curve"] if "all" in losses]
        panels.setdefault(seed, []).append((label, points, math.exp(row["eval"]["all"]["loss"])))
    return panels


def draw(panels: Dict[str, List[Line]], path: Path, ylim: Tuple[Optional[float], Optional[float]] = (None, None)) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for lines in panels.values() for label, _, _ in lines))
    colours = {label: f"C{i}" for i, label in enumerate(labels)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (seed, lines) in zip(axes.flat, panels.items()):
        for label, points, perplexity in lines:
            ax.plot(*zip(*points), marker="o", ms=3, c=colours[label], label=f"{label}: {perplexity:.1f}")
        ax.set_title(f"seed {seed} (final pooled perplexity in the legend)", fontsize=9)
        ax.set_xlabel("training tokens")
        ax.legend(fontsize=7)
        ax.set_ylim(*ylim)
    axes.flat[0].set_ylabel("pooled eval loss (nats/token)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="+", metavar="ROW_JSON:SEED:LABEL")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--ymin", type=float, help="lower end of the loss axis (default: matplotlib's)")
    parser.add_argument("--ymax", type=float, help="upper end of the loss axis: the first points are far above the rest")
    args = parser.parse_args(argv)
    draw(read_lines(args.rows), args.out, (args.ymin, args.ymax))
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
