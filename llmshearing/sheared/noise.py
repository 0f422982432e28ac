"""The L0 masks' own random stream: the noise of draw n is a pure function of (seed, n).

Mask sampling must not use the global RNG: Composer restores the global RNG from a checkpoint only
at an epoch boundary, so a run resumed mid-epoch would sample other masks than the uninterrupted
run. A counter-based stream makes the whole state two integers, which go into every checkpoint
(the L0 module's extra state) and are the same on every device type.

All ranks share one stream by default: they sample the same masks, as a single process training on
the whole batch would. ``stream`` picks another of the seed's independent streams (a rank's own
masks, ``pruning.per_rank_masks``); it is not part of the state, so a resumed rank keeps drawing
from its own.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List

import numpy as np
import torch


class NoiseStream:
    def __init__(self, seed: int = 0, stream: int = 0) -> None:
        self.seed = int(seed)
        self.draws = 0
        self.stream = int(stream)
        self._generators: Dict[torch.device, torch.Generator] = {}

    def next_generator(self, device: torch.device) -> torch.Generator:
        """A generator on ``device`` seeded for the next draw; the stream moves on by one draw."""
        device = torch.device(device)
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        generator.manual_seed(_mix(self.seed, self.draws, self.stream))
        self.draws += 1
        return generator

    def restart(self, seed: int) -> None:
        self.seed, self.draws = int(seed), 0

    @contextmanager
    def preserved(self) -> Iterator["NoiseStream"]:
        """Draws inside the block (e.g. a seeded measurement) leave the training stream untouched."""
        saved = self.state_dict()
        try:
            yield self
        finally:
            self.load_state_dict(saved)

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed, "draws": self.draws}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.seed, self.draws = int(state["seed"]), int(state["draws"])


def _mix(seed: int, draw: int, stream: int = 0) -> int:
    """A well-spread 63-bit generator seed for (seed, draw, stream): nearby draws get unrelated noise."""
    entropy = [seed, draw, stream] if stream else [seed, draw]  # stream 0: the seeds the shared stream always had
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def noise_streams(model: torch.nn.Module) -> List[NoiseStream]:
    """The noise streams of the modules of ``model`` that have one (the L0 module)."""
    return [module.noise for module in model.modules() if isinstance(getattr(module, "noise", None), NoiseStream)]
