"""Data-quality report of one ingest run: the same numbers as JSON (for machines), Markdown (for
pull requests and terminals) and a self-contained HTML page with small histograms (for people)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlinfra_ray.contract import LINE, RAW, REASONS, SOURCE
from mlinfra_ray.fingerprint import fingerprint
from mlinfra_ray.quality_html import render_html
from mlinfra_ray.settings import ContractSettings

BARS = " ▁▂▃▄▅▆▇█"
BINS = 20
EXAMPLES = 3  # per reason
SAMPLE = 10_000  # rows looked at to choose how to count a text column's values


def profile_columns(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Per column: null %, distinct count, and range + histogram (numbers, times) or top values."""
    out: dict[str, dict[str, Any]] = {}
    n = max(table.num_rows, 1)
    for name in table.column_names:
        if name.startswith("_"):
            continue
        col = table.column(name)
        stats: dict[str, Any] = {"type": str(col.type), "null_pct": round(100 * col.null_count / n, 3)}
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_timestamp(col.type):
            stats.update(_ordered(col))
        else:
            stats.update(_categories(col, top_below=max(1000, n // 10)))  # keys have no "top values"
        out[name] = stats
    return out


def _categories(col: pa.ChunkedArray, top_below: int) -> dict[str, Any]:
    """Distinct count, and the most frequent values when there are fewer than `top_below`.

    A strided sample picks the method: few distinct values in it → one exact value_counts gives
    both numbers (−50 ms per enum-like column of 2.7M rows); many → distinct 64-bit
    fingerprints (a hash table over millions of keys is the slowest part of profiling;
    collisions are ~1e-7 at 10M values), exact for anything but text."""
    values = col.drop_null()
    step = max(1, len(values) // SAMPLE)
    if len(values) and pc.count_distinct(values.take(pa.array(np.arange(0, len(values), step)))).as_py() \
            <= SAMPLE // 100:
        counts = pc.value_counts(values)
        return {"distinct": len(counts), **({"top": _top(counts)} if len(counts) <= top_below else {})}
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        distinct = int(len(np.unique(fingerprint(values)))) if len(values) else 0
    else:
        distinct = pc.count_distinct(values).as_py()
    return {"distinct": distinct, **({"top": _top(pc.value_counts(values))} if distinct <= top_below else {})}


def _top(counts: pa.StructArray, k: int = 8) -> dict[str, int]:
    """The k most frequent of `value_counts` output."""
    if not len(counts):
        return {}
    best = pc.select_k_unstable(counts.field("counts"), k=min(k, len(counts)),
                                sort_keys=[("counts", "descending")])
    return {str(v): c for v, c in zip(counts.field("values").take(best).to_pylist(),
                                      counts.field("counts").take(best).to_pylist(), strict=True)}


def _ordered(col: pa.ChunkedArray) -> dict[str, Any]:
    """Numbers and times, from one sort: exact distinct count, range, histogram (Arrow's
    count_distinct alone took 0.39 s for 2.7M timestamps; the sort ~0.05 s)."""
    values = col.drop_null()
    if not len(values):
        return {"distinct": 0}
    temporal = pa.types.is_timestamp(values.type)
    x = values.cast(pa.int64()).to_numpy() if temporal else values.to_numpy()
    ordered = np.sort(x)
    distinct = 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))  # (the contract lets no NaN in)
    return {"distinct": distinct, **(_temporal(values, ordered) if temporal else _numeric(x, ordered))}


def _numeric(x: np.ndarray, ordered: np.ndarray) -> dict[str, Any]:
    x, ordered = x.astype(np.float64, copy=False), ordered.astype(np.float64, copy=False)
    lo, hi = np.percentile(ordered, [0.5, 99.5])  # heavy tails would squash every bar into one
    counts, edges = np.histogram(ordered, bins=BINS, range=(lo, hi) if hi > lo else None)
    return {"min": float(ordered[0]), "max": float(ordered[-1]), "mean": float(x.mean()),
            "histogram": counts.tolist(), "edges": [round(float(e), 6) for e in edges],
            "histogram_range": "p0.5–p99.5"}


def _temporal(values: pa.ChunkedArray, ordered: np.ndarray) -> dict[str, Any]:
    counts, edges = np.histogram(ordered / 1e6, bins=BINS)
    mm = pc.min_max(values)
    return {"min": str(mm["min"].as_py()), "max": str(mm["max"].as_py()), "histogram": counts.tolist(),
            "edges": [time.strftime("%Y-%m-%d %H:%M", time.gmtime(e)) for e in edges]}


def reason_examples(quarantine: pa.Table) -> dict[str, list[dict[str, Any]]]:
    """A few quarantined rows per reason code, with where they came from and the offending value
    (rows failing for that reason alone are preferred: they show the problem most plainly)."""
    examples: dict[str, list[int]] = {}
    if quarantine.num_rows == 0:
        return {}
    reasons = quarantine.column(REASONS).to_pylist()
    for only_one in (True, False):
        for i, rs in enumerate(reasons):
            codes = rs.split(";")
            for code in codes if not only_one or len(codes) == 1 else []:
                picked = examples.setdefault(code, [])
                if len(picked) < EXAMPLES and i not in picked:
                    picked.append(i)
    wanted = sorted({i for idx in examples.values() for i in idx})
    rows = dict(zip(wanted, quarantine.select([SOURCE, LINE, RAW]).take(pa.array(wanted)).to_pylist(),
                    strict=True))
    return {code: [_example(code, rows[i]) for i in idx] for code, idx in examples.items()}


def _example(code: str, row: dict[str, Any]) -> dict[str, Any]:
    column = code.split(":", 1)[1] if ":" in code and not code.startswith("parse:") else None
    try:
        value = json.loads(row[RAW]).get(column) if column else None
    except (ValueError, AttributeError):
        value = None
    return {"file": row[SOURCE], "line": row[LINE], "column": column, "value": value, "raw": row[RAW]}


def build_report(clean: pa.Table, quarantine: pa.Table, result: Any, contract: ContractSettings,
                 over_budget: bool) -> dict[str, Any]:
    accounted = result.clean + result.quarantined + result.duplicates_removed
    return {
        "snapshot_id": result.snapshot_id, "run_id": result.run_id, "contract": contract.name,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows_in": result.rows_in, "clean": result.clean, "quarantined": result.quarantined,
        "duplicates_removed": result.duplicates_removed, "accounting_ok": accounted == result.rows_in,
        "quarantine_fraction": round(result.quarantine_fraction, 6),
        "max_quarantine_fraction": contract.max_quarantine_fraction, "over_budget": over_budget,
        "reasons": result.reasons, "examples": reason_examples(quarantine),
        "files": [{k: f.get(k) for k in ("path", "bytes", "blake3", "rows_in", "clean", "quarantined",
                                         "duplicates_removed")} for f in result.files],
        "skipped_files": result.skipped_files,
        "extra_columns": result.extra_columns, "extra_columns_policy": contract.extra_columns,
        "columns": profile_columns(clean),
    }


def write_quality_report(clean: pa.Table, quarantine: pa.Table, result: Any, out_dir: Path,
                         contract: ContractSettings, over_budget: bool = False) -> dict[str, Any]:
    report = build_report(clean, quarantine, result, contract, over_budget)
    (out_dir / "quality.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "quality.md").write_text(render_markdown(report))
    (out_dir / "quality.html").write_text(render_html(report))
    return report


def render_markdown(r: dict[str, Any]) -> str:
    status = "**OVER THE ERROR BUDGET — nothing was written**" if r["over_budget"] else "within budget"
    lines = [f"# Data quality — run `{r['run_id']}`, snapshot `{r['snapshot_id']}`", "",
             f"**{r['rows_in']:,} rows in = {r['clean']:,} clean + {r['quarantined']:,} quarantined "
             f"+ {r['duplicates_removed']:,} duplicates removed** — {r['quarantine_fraction']:.2%} quarantined "
             f"(budget {r['max_quarantine_fraction']:.2%}, {status})", "",
             "## Quarantine by reason", "", "| reason | rows | example (file:line — raw) |", "|---|---:|---|"]
    for code, count in r["reasons"].items():
        ex = (r["examples"].get(code) or [{}])[0]
        where = f"{Path(str(ex.get('file', ''))).name}:{ex.get('line', '')}"
        shown = f"{ex['column']} = {json.dumps(ex.get('value'))}" if ex.get("column") else \
            str(ex.get("raw", ""))
        lines.append(f"| `{code}` | {count:,} | {where} — `{shown[:100].replace('|', '¦')}` |")
    lines += ["", "## Clean columns", "", "| column | null % | distinct | range / top values | histogram |",
              "|---|---:|---:|---|---|"]
    for name, s in r["columns"].items():
        lines.append(f"| {name} | {s['null_pct']:.2f} | {s['distinct']:,} | {_describe(s)} | "
                     f"{_spark(s.get('histogram', []))} |")
    lines += ["", "## Files", "", "| file | rows in | clean | quarantined | duplicates |",
              "|---|---:|---:|---:|---:|"]
    lines += [f"| {f['path']} | {f['rows_in']:,} | {f['clean']:,} | {f['quarantined']:,} | "
              f"{f['duplicates_removed']:,} |" for f in r["files"] if f.get("rows_in") is not None]
    if r["skipped_files"]:
        lines += ["", f"Skipped (already ingested): {len(r['skipped_files'])} files."]
    if r["extra_columns"]:
        cols = ", ".join(f"`{k}` ({v:,} rows)" for k, v in r["extra_columns"].items())
        lines += ["", f"Columns not in the contract ({r['extra_columns_policy']}): {cols}"]
    return "\n".join(lines) + "\n"


def _describe(s: dict[str, Any]) -> str:
    if "top" not in s and "min" not in s:
        return "key-like (no top values)"
    if "top" in s:
        return ", ".join(f"{k} ({v:,})" for k, v in list(s["top"].items())[:5])
    if "mean" in s:
        return f"{s['min']:.4g} … {s['max']:.4g} (mean {s['mean']:.4g})"
    return f"{s.get('min', '')} … {s.get('max', '')}"


def _spark(counts: list[int]) -> str:
    top = max(counts, default=0) or 1
    return "".join(BARS[int(round(8 * c / top))] for c in counts)
