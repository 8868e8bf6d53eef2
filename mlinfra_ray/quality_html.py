"""The quality report as one self-contained HTML page: no scripts, no external assets, inline SVG
histograms, so it can be opened from a lake folder, attached to a ticket or served as a file."""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%} td,th{padding:4px 8px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top} td.n{text-align:right;font-variant-numeric:tabular-nums}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px;word-break:break-all}
.ok{background:#e7f6ea;border-left:4px solid #2e7d32;padding:.6em 1em}
.bad{background:#fdecea;border-left:4px solid #c62828;padding:.6em 1em}
.bar{fill:#4a78b5} .muted{color:#777}
"""


def render_html(r: dict[str, Any]) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Data quality {escape(r['run_id'])}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>Data quality — {escape(r['contract'])}</h1>",
             f"<p class='muted'>run <code>{escape(r['run_id'])}</code> · snapshot "
             f"<code>{escape(r['snapshot_id'])}</code> · {escape(r['generated_at'])}</p>",
             _summary(r), _reasons(r), _columns(r), _files(r), "</body></html>"]
    return "\n".join(parts)


def _summary(r: dict[str, Any]) -> str:
    kind = "bad" if r["over_budget"] or not r["accounting_ok"] else "ok"
    verdict = ("over the error budget: nothing was written to the snapshot" if r["over_budget"]
               else "within the error budget")
    return (f"<div class='{kind}'><b>{r['rows_in']:,} rows in = {r['clean']:,} clean + "
            f"{r['quarantined']:,} quarantined + {r['duplicates_removed']:,} duplicates removed</b>"
            f"{'' if r['accounting_ok'] else ' — ACCOUNTING MISMATCH'}<br>"
            f"{r['quarantine_fraction']:.2%} quarantined, budget {r['max_quarantine_fraction']:.2%}: "
            f"{verdict}</div>")


def _reasons(r: dict[str, Any]) -> str:
    if not r["reasons"]:
        return "<h2>Quarantine</h2><p>No row was quarantined.</p>"
    top = max(r["reasons"].values())
    rows = []
    for code, count in r["reasons"].items():
        examples = "".join(_example(e) for e in r["examples"].get(code, []))
        rows.append(f"<tr><td><code>{escape(code)}</code></td><td class='n'>{count:,}</td>"
                    f"<td>{_hbar(count, top)}</td><td>{examples}</td></tr>")
    return ("<h2>Quarantine by reason</h2><table><tr><th>reason</th><th>rows</th><th></th>"
            "<th>examples (file:line, raw values)</th></tr>" + "".join(rows) + "</table>")


def _example(e: dict[str, Any]) -> str:
    """file:line, the offending value up front, the whole raw row one click away."""
    where = f"<span class='muted'>{escape(str(e['file']).rsplit('/', 1)[-1])}:{e['line']}</span>"
    value = f" <code>{escape(str(e['column']))} = {escape(json.dumps(e.get('value')))}</code>" \
        if e.get("column") else ""
    return (f"<details><summary>{where}{value}</summary><code>{escape(str(e['raw']))}</code></details>"
            if value else f"<div>{where} <code>{escape(str(e['raw']))}</code></div>")


def _columns(r: dict[str, Any]) -> str:
    rows = []
    for name, s in r["columns"].items():
        if "top" in s:
            desc = "<br>".join(f"{escape(k)} <span class='muted'>({v:,})</span>" for k, v in s["top"].items())
            chart = _hbars(list(s["top"].values()))
        elif "min" not in s:
            desc, chart = "<span class='muted'>key-like: no top values</span>", ""
        else:
            lo, hi = s.get("min", ""), s.get("max", "")
            mean = f"<br><span class='muted'>mean {s['mean']:.4g}</span>" if "mean" in s else ""
            desc = f"{_fmt(lo)} … {_fmt(hi)}{mean}"
            chart = _histogram(s.get("histogram", []))
        rows.append(f"<tr><td><b>{escape(name)}</b><br><span class='muted'>{escape(s['type'])}</span></td>"
                    f"<td class='n'>{s['null_pct']:.2f}%</td><td class='n'>{s['distinct']:,}</td>"
                    f"<td>{desc}</td><td>{chart}</td></tr>")
    return ("<h2>Clean columns</h2><table><tr><th>column</th><th>null</th><th>distinct</th>"
            "<th>range / top values</th><th>distribution</th></tr>" + "".join(rows) + "</table>")


def _files(r: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td><code>{escape(str(f['path']))}</code></td><td class='n'>{f['bytes'] or 0:,}</td>"
                   f"<td class='n'>{f.get('rows_in') or 0:,}</td><td class='n'>{f.get('clean') or 0:,}</td>"
                   f"<td class='n'>{f.get('quarantined') or 0:,}</td>"
                   f"<td class='n'>{f.get('duplicates_removed') or 0:,}</td>"
                   f"<td><code>{escape(str(f.get('blake3') or ''))[:16]}</code></td></tr>" for f in r["files"])
    extra = ""
    if r["extra_columns"]:
        cols = ", ".join(f"<code>{escape(k)}</code> ({v:,} rows)" for k, v in r["extra_columns"].items())
        extra = f"<p>Columns not in the contract ({escape(r['extra_columns_policy'])}): {cols}</p>"
    skipped = (f"<p class='muted'>{len(r['skipped_files'])} files skipped: already ingested.</p>"
               if r["skipped_files"] else "")
    return ("<h2>Input files</h2><table><tr><th>file</th><th>bytes</th><th>rows in</th><th>clean</th>"
            "<th>quarantined</th><th>duplicates</th><th>blake3</th></tr>" + rows + "</table>" + extra + skipped)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else escape(str(value))


def _histogram(counts: list[int], width: int = 220, height: int = 40) -> str:
    if not counts:
        return ""
    top, step = max(counts) or 1, width / len(counts)
    bars = "".join(f"<rect class='bar' x='{i * step:.1f}' y='{height - height * c / top:.1f}' "
                   f"width='{max(step - 1, 1):.1f}' height='{height * c / top:.1f}'><title>{c:,}</title></rect>"
                   for i, c in enumerate(counts))
    return f"<svg width='{width}' height='{height}' role='img'>{bars}</svg>"


def _hbars(counts: list[int]) -> str:
    top = max(counts, default=0) or 1
    return "".join(f"<div>{_hbar(c, top, 160)}</div>" for c in counts)


def _hbar(count: int, top: int, width: int = 200) -> str:
    w = max(1.0, width * count / (top or 1))
    return f"<svg width='{width}' height='12'><rect class='bar' width='{w:.1f}' height='10'/></svg>"
