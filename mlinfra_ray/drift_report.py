"""Batch drift report: a new data snapshot against the served model's reference, for people.

The same detectors as the online monitor (`drift.DriftSuite`, rebuilt from the bundle) test a
seeded sample of the snapshot as large as the reference (so the test's power matches what
serving sees in a full window of that size); the report adds what a person needs to read it at a
glance: a verdict, one table row per feature (test, statistic, p-value, drifted?) and one plot per
feature (reference vs snapshot histograms or category frequencies), plus the score distribution.

Writes `report.html` (images inline), `report.md` (images as files beside it) and `report.json`.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mlinfra_ray.drift import DriftSuite
from mlinfra_ray.settings import Settings

log = logging.getLogger(__name__)


def run_drift_report(settings: Settings, table: pa.Table | None = None) -> dict[str, Any]:
    """Report on `table` (default: drift.report_data, else the clean lake) vs the served bundle."""
    from mlinfra_ray.serve.loader import load_served_bundle, model_source
    from mlinfra_ray.settings import to_dict

    bundle, info = load_served_bundle(model_source(to_dict(settings)))
    snapshot = table if table is not None else read_snapshot(settings)
    out_dir = Path(settings.drift.report_dir or Path(settings.paths.root) / "reports" / "drift")
    return write_report(bundle, info, snapshot, settings, out_dir)


def read_snapshot(settings: Settings) -> pa.Table:
    if settings.drift.report_data:
        import pyarrow.dataset as pads

        return pads.dataset(settings.drift.report_data, format="parquet", partitioning="hive").to_table()
    from mlinfra_ray.ingest import read_clean

    return read_clean(settings.paths.lake, settings.contract)


def write_report(bundle: Any, info: dict[str, Any], snapshot: pa.Table, settings: Settings,
                 out_dir: Path) -> dict[str, Any]:
    from mlinfra_ray.features.transforms import drift_matrix

    spec = bundle.parts["drift"]
    names, categories = list(spec["columns"]), {int(k): int(v) for k, v in spec["categories"].items()}
    reference, ref_scores = bundle.drift_reference(), spec.get("reference_scores")
    rows, scores = drift_matrix(bundle.feature_state, snapshot), bundle.predict(snapshot)
    idx = np.random.default_rng(settings.seed).permutation(len(rows))[: len(reference)]
    suite = DriftSuite(reference, names, categories, settings.drift,
                       None if ref_scores is None else np.asarray(ref_scores, np.float32))
    result = suite.check(rows[np.sort(idx)], scores[np.sort(idx)])
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(reference, rows, names, categories, bundle.feature_state, result,
                   ref_scores, scores, out_dir / "plots")
    summary = {"model": {k: info.get(k) for k in ("name", "version", "alias")}, "rows": int(len(rows)),
               "tested_rows": int(len(idx)), "reference_rows": int(len(reference)), **result,
               "report_html": str(out_dir / "report.html"), "report_md": str(out_dir / "report.md")}
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2, default=float))
    (out_dir / "report.md").write_text(_markdown(summary, names, categories, plots))
    (out_dir / "report.html").write_text(_html(summary, names, categories, plots))
    log.info("drift report: %s (%s)", "DRIFT" if result["is_drift"] else "no drift", out_dir / "report.html")
    return summary


def _plots(ref: np.ndarray, new: np.ndarray, names: list[str], categories: dict[int, int],
           state: dict[str, Any], result: dict[str, Any], ref_scores: Any, scores: np.ndarray,
           out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    vocab = {len(state["numeric"]) + i: f["vocab"] for i, f in enumerate(state["categorical"])}
    logged = {f["name"] for f in state["numeric"] if f.get("log")}
    paths = {}
    for i, name in enumerate(names):
        fig, ax = plt.subplots(figsize=(5, 3))
        if i in categories:
            labels = vocab.get(i, [str(c) for c in range(categories[i])])
            pos = np.arange(len(labels))
            for shift, data, label in ((-0.2, ref[:, i], "reference"), (0.2, new[:, i], "snapshot")):
                freq = np.bincount(data.astype(int), minlength=len(labels))[: len(labels)] / max(len(data), 1)
                ax.bar(pos + shift, freq, width=0.4, label=label)
            ax.set_xticks(pos, labels, rotation=45, ha="right", fontsize=7)
        else:
            edges = np.histogram_bin_edges(np.concatenate([ref[:, i], new[:, i]]), bins=30)
            ax.hist(ref[:, i], bins=edges, density=True, alpha=0.5, label="reference")
            ax.hist(new[:, i], bins=edges, density=True, alpha=0.5, label="snapshot")
        p, flag = result["p_vals"][name], " DRIFT" if result["p_vals"][name] < result["threshold"] else ""
        label = f"log1p({name})" if name in logged else name
        paths[name] = _save(fig, ax, f"{label}: p={p:.2g}{flag}", out / f"{name}.png")
    if ref_scores is not None:
        fig, ax = plt.subplots(figsize=(5, 3))
        edges = np.linspace(0, 1, 31)
        ax.hist(ref_scores, bins=edges, density=True, alpha=0.5, label="reference")
        ax.hist(scores, bins=edges, density=True, alpha=0.5, label="snapshot")
        test = result["tests"].get("score", {})
        paths["__score__"] = _save(fig, ax, f"prediction score: p={test.get('p_val', float('nan')):.2g}",
                                   out / "score.png")
    return paths


def _save(fig: Any, ax: Any, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _rows(summary: dict[str, Any], names: list[str], categories: dict[int, int]) -> list[list[str]]:
    threshold = summary["threshold"]
    return [[n, "chi-square" if i in categories else "KS", f"{summary['distances'][n]:.4g}",
             f"{summary['p_vals'][n]:.3g}", "yes" if summary["p_vals"][n] < threshold else "no"]
            for i, n in enumerate(names)]


def _verdict(summary: dict[str, Any]) -> str:
    tests = ", ".join(f"{k}: p={v['p_val']:.3g}{' (drift)' if v['is_drift'] else ''}"
                      for k, v in summary["tests"].items())
    word = "DRIFT DETECTED" if summary["is_drift"] else "No drift detected"
    return (f"{word} — model {summary['model']['name']} v{summary['model']['version']}; "
            f"{summary['tested_rows']} of {summary['rows']} snapshot rows vs {summary['reference_rows']} "
            f"reference rows; each test at level {summary['alpha']:.3g}. Tests: {tests}.")


HEADER = ["feature", "test", "statistic", "p-value", "drifted"]


def _markdown(summary: dict[str, Any], names: list[str], categories: dict[int, int],
              plots: dict[str, Path]) -> str:
    lines = ["# Drift report", "", f"**{_verdict(summary)}**", "",
             f"Per-feature threshold after correction: {summary['threshold']:.3g}", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(summary, names, categories)]
    lines += [""] + [f"![{n}](plots/{p.name})" for n, p in plots.items()]
    return "\n".join(lines) + "\n"


def _html(summary: dict[str, Any], names: list[str], categories: dict[int, int],
          plots: dict[str, Path]) -> str:
    color = "#b00020" if summary["is_drift"] else "#1b5e20"
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in _rows(summary, names, categories))
    images = "".join(f'<img alt="{html.escape(n)}" src="data:image/png;base64,'
                     f'{base64.b64encode(p.read_bytes()).decode()}">' for n, p in plots.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Drift report</title><style>"
            f"body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}"
            f"img{{margin:4px}}</style></head><body><h1>Drift report</h1>"
            f"<p style='color:{color};font-weight:bold'>{html.escape(_verdict(summary))}</p>"
            f"<p>Per-feature threshold after correction: {summary['threshold']:.3g}</p><table><tr>"
            + "".join(f"<th>{h}</th>" for h in HEADER) + f"</tr>{rows}</table>{images}</body></html>\n")
