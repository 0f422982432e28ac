"""Test helper: run a train.py config and record what every training step saw.

    python tests/record_batches.py OUT.json CONFIG.yaml [key=value ...]

Writes {"batches": [[step, sha1 of the rank's input_ids], ...], "loss": final loss,
"weights": dynamic-loading weights in force at the end, "params": sha1 of the model weights}.
"""
from __future__ import annotations

import hashlib
import json
import sys

import torch
from composer.core import Callback

from llmshearing.config import load_config
from llmshearing.training import build_trainer


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class RecordBatches(Callback):
    def __init__(self) -> None:
        self.rows = []

    def after_dataloader(self, state, logger) -> None:
        self.rows.append([int(state.timestamp.batch) + 1, digest(state.batch["input_ids"])])


def main(out: str, yaml: str, *overrides: str) -> None:
    trainer = build_trainer(load_config(yaml, overrides))
    recorder = RecordBatches()
    trainer.state.callbacks.append(recorder)
    trainer.fit()
    state = trainer.state
    dataset = state.train_dataloader.dataset
    weights = getattr(dataset, "current_weights", None)
    params = hashlib.sha1(b"".join(bytes.fromhex(digest(p)) for p in state.model.parameters()))
    record = {
        "batches": recorder.rows,
        "loss": float(state.total_loss_dict["loss/train/total"]),
        "weights": None if weights is None else weights(int(state.timestamp.batch)).tolist(),
        "params": params.hexdigest(),
    }
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(record, handle)


if __name__ == "__main__":
    main(*sys.argv[1:])
