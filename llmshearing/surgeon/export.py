"""A finished surgeon run → pruning plan → (sliced) model → HF export + surgeon_report.json."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from llmshearing.surgeon.report import peak_rss_bytes, write_report
from llmshearing.surgeon.settings import STRUCTURED


def nonzero_parameters(model) -> int:
    return sum(int(torch.count_nonzero(p)) for p in {id(p): p for p in model.parameters()}.values())


def pruned_model(model, surgeon_run, settings):
    """The plan and the model to export: sliced (structured) or the model itself (zeros kept in place)."""
    from llmshearing.slicing import slice_model

    plan = surgeon_run.pruner.plan(model)
    plan.metadata = {"mode": settings.mode, "target_density": settings.density, "shots": settings.shots,
                     "scoring": settings.scoring, "uniform": settings.uniform}
    return plan, slice_model(model, plan) if settings.mode == STRUCTURED else model


def export_result(model, surgeon_run, settings, out, tokenizer=None, *, started_at: float, calibration: dict,
                  say: Callable[[str], None] = print) -> Path:
    from llmshearing.convert import export_hf

    plan, result = pruned_model(model, surgeon_run, settings)
    out = export_hf(result, out, tokenizer=tokenizer, plan=plan)
    report = write_report(
        out, settings=settings, run=surgeon_run, source_config=model.config, result_config=result.config,
        source_params=model.num_parameters(), result_params=result.num_parameters(),
        nonzero_params=nonzero_parameters(result), seconds=time.perf_counter() - started_at,
        calibration=calibration)
    say(f"density {surgeon_run.shots[-1].density:.4f} of the layers' projection weights "
        f"(target {settings.density}); report: {report}")
    if surgeon_run.memory_estimate_bytes and model.lm_head.weight.device.type == "cpu":
        say(f"peak memory (process RSS): {peak_rss_bytes() / 1024 ** 3:.2f} GB "
            f"(estimated at the start: {surgeon_run.memory_estimate_bytes / 1024 ** 3:.2f} GB)")
    return out
