"""Data-quality report: the same numbers as JSON (for machines) and Markdown (for people)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.contract import RAW, REASONS

BARS = " ▁▂▃▄▅▆▇█"


def profile_columns(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Per column: null %, distinct count, and range + histogram (numeric) or top values (text)."""
    out: dict[str, dict[str, Any]] = {}
    n = max(table.num_rows, 1)
    for name in table.column_names:
        if name.startswith("_"):
            continue
        col = table.column(name)
        stats: dict[str, Any] = {"null_pct": round(100 * col.null_count / n, 3),
                                 "distinct": pc.count_distinct(col).as_py()}
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            values = col.drop_null().to_numpy()
            if len(values):
                counts, edges = np.histogram(values, bins=12)
                stats.update(min=float(values.min()), max=float(values.max()),
                             mean=float(values.mean()), histogram=counts.tolist(),
                             edges=[round(float(e), 4) for e in edges])
        elif pa.types.is_timestamp(col.type):
            mm = pc.min_max(col)
            stats.update(min=str(mm["min"].as_py()), max=str(mm["max"].as_py()))
        else:
            top = pc.value_counts(col.drop_null()).to_pylist()
            top.sort(key=lambda d: -d["counts"])
            stats["top"] = {d["values"]: d["counts"] for d in top[:5]}
        out[name] = stats
    return out


def write_quality_report(clean: pa.Table, quarantine: pa.Table, result: Any, out_dir: Path) -> dict:
    examples: dict[str, str] = {}
    for reasons, raw in zip(quarantine.column(REASONS).to_pylist(), quarantine.column(RAW).to_pylist(),
                            strict=True):
        for code in reasons.split(";"):
            examples.setdefault(code, raw)
    report = {
        "snapshot_id": result.snapshot_id,
        "rows_in": result.rows_in, "clean": result.clean, "quarantined": result.quarantined,
        "duplicates_removed": result.duplicates_removed,
        "quarantine_fraction": round(result.quarantine_fraction, 6),
        "reasons": result.reasons, "examples": examples, "columns": profile_columns(clean),
    }
    (out_dir / "quality.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "quality.md").write_text(_markdown(report))
    return report


def _markdown(r: dict) -> str:
    lines = [f"# Data quality — snapshot `{r['snapshot_id']}`", "",
             f"**{r['rows_in']:,} rows in = {r['clean']:,} clean + {r['quarantined']:,} quarantined "
             f"+ {r['duplicates_removed']:,} duplicates removed** "
             f"({r['quarantine_fraction']:.2%} quarantined)", "",
             "## Quarantine by reason", "", "| reason | rows | example (raw) |", "|---|---:|---|"]
    for code, count in r["reasons"].items():
        example = str(r["examples"].get(code, ""))[:120].replace("|", "\\|")
        lines.append(f"| `{code}` | {count:,} | `{example}` |")
    lines += ["", "## Clean columns", "", "| column | null % | distinct | range / top values | histogram |",
              "|---|---:|---:|---|---|"]
    for name, s in r["columns"].items():
        if "histogram" in s:
            desc, hist = f"{s['min']:.4g} … {s['max']:.4g} (mean {s['mean']:.4g})", _spark(s["histogram"])
        elif "top" in s:
            desc, hist = ", ".join(f"{k} ({v})" for k, v in s["top"].items()), ""
        else:
            desc, hist = f"{s.get('min')} … {s.get('max')}", ""
        lines.append(f"| {name} | {s['null_pct']:.2f} | {s['distinct']:,} | {desc} | {hist} |")
    return "\n".join(lines) + "\n"


def _spark(counts: list[int]) -> str:
    top = max(counts) or 1
    return "".join(BARS[int(round(8 * c / top))] for c in counts)
