"""Human-readable output for people running jobs (logs are for machines)."""

from __future__ import annotations

from typing import Any


def print_summary(summary: dict[str, Any]) -> None:
    ing, train = summary["ingest"], summary["train"]
    test = train["test"]
    lines = [
        "",
        "=" * 72,
        "mlinfra_ray pipeline summary",
        "=" * 72,
        f"ingest   rows in {ing['rows_in']:,} = clean {ing['clean']:,} + quarantined "
        f"{ing['quarantined']:,} + duplicates removed {ing['duplicates_removed']:,}",
        f"         top quarantine reasons: {_top(ing['reasons'])}",
        f"         snapshot {ing['snapshot_id']}, report {ing['report_path']}",
        f"train    run {train['run_name']} ({train['epochs']} epochs)",
        f"evaluate later window: AUC-PR {test['auc_pr']:.3f} vs baseline (positive rate) "
        f"{test['positive_rate']:.3f} = {test['auc_pr_lift']:.1f}x; AUC-ROC {test['auc_roc']:.3f}",
        f"registry {train['registry']['name']} v{train['registry']['version']} "
        f"alias '{train['registry']['alias']}'",
    ]
    serve = summary.get("serve")
    if serve:
        lines += [
            f"serve    {serve['requests_sent']} requests, served == offline prediction: "
            f"{serve['served_matches_offline']}, /metrics counted {serve['metrics_requests_total']}",
            f"drift    clean traffic flagged: {serve['clean_drift']}; drifted traffic flagged: "
            f"{serve['shifted_drift']} (top drifted: {serve['top_drifted']})",
        ]
    lines += [f"total    {summary['seconds']} s; details in {summary['path']}", "=" * 72]
    print("\n".join(lines), flush=True)


def _top(reasons: dict[str, int], n: int = 3) -> str:
    return ", ".join(f"{k} ({v})" for k, v in list(reasons.items())[:n]) or "none"
