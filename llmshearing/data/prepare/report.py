"""The per-domain table printed when a corpus is finished."""

from __future__ import annotations

from pathlib import Path

from tabulate import tabulate


def _disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.mds") if path.is_file())


def corpus_table(manifest: dict, out_dir: str | Path) -> str:
    """Documents read, bad records and per split documents / tokens / samples, per domain."""
    splits = manifest.get("splits", ["train", "eval"])
    headers = ["domain", "documents read", "bad records",
               *[f"{split} {what}" for split in splits for what in ("docs", "tokens", "samples")]]
    rows = []
    for domain in manifest["domains"]:
        info = manifest["per_domain"][domain]
        rows.append([domain, info.get("documents_read", ""), info.get("bad_records", ""),
                     *[value for split in splits
                       for value in (info[split]["documents"], info[split]["tokens"], info[split]["samples"])]])
    totals = ["total", sum(row[1] or 0 for row in rows), sum(row[2] or 0 for row in rows),
              *[sum(row[index] for row in rows) for index in range(3, len(headers))]]
    rows.append(totals)
    tokens = sum(manifest["per_domain"][domain][split]["tokens"] for domain in manifest["domains"] for split in splits)
    disk = _disk_bytes(Path(out_dir))
    footer = (f"{manifest['token_dtype'] if 'token_dtype' in manifest else 'int32'} tokens, "
              f"{disk / max(tokens, 1):.2f} bytes per token on disk (surplus units included)")
    return tabulate(rows, headers=headers, intfmt=",") + "\n" + footer
