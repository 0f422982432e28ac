"""Dataset loader of the local lm-eval task (``custom_dataset`` in corpus_lastword.yaml): reads the
JSONL beside this file, or ``data_file`` given through lm-eval's ``--metadata``. No network."""
from __future__ import annotations

import json
from pathlib import Path

DEFAULT_DATA = Path(__file__).with_name("corpus_lastword.jsonl")


def load(data_file: str | None = None, **_metadata):
    import datasets

    lines = Path(data_file or DEFAULT_DATA).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
