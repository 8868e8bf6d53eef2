"""The batch drift report: same detectors as serving, a verdict, a table and readable plots."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mlinfra_ray.bundle import load_bundle
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.bundles import synthetic_bundle
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.drift_report import write_report


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    settings = compose_settings(["drift.reference_size=800"])
    syn = dataclasses.replace(settings.data.synthetic, rows=2500, seed=21)
    clean = generate_transactions(syn)
    path = synthetic_bundle(tmp_path_factory.mktemp("b") / "v2", settings, train=clean.slice(0, 1500))
    shifted = generate_transactions(dataclasses.replace(syn, rows=1000), drift="shift")
    return settings, load_bundle(path), clean.slice(1500), shifted


def test_clean_snapshot_reports_no_drift(setup, tmp_path):
    settings, bundle, clean, _ = setup
    summary = write_report(bundle, {"name": "fraud", "version": "2"}, clean, settings, tmp_path)
    assert summary["is_drift"] is False, summary["tests"]
    assert summary["tested_rows"] == 800 and summary["rows"] == 1000
    assert "No drift detected" in (tmp_path / "report.md").read_text()


def test_shifted_snapshot_report_names_the_drifted_features(setup, tmp_path):
    settings, bundle, _, shifted = setup
    summary = write_report(bundle, {"name": "fraud", "version": "2"}, shifted, settings, tmp_path)
    assert summary["is_drift"] is True
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# Drift report") and "DRIFT DETECTED" in md
    assert "| amount | KS |" in md and md.count("| yes |") >= 1
    columns = bundle.parts["drift"]["columns"]
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == sorted([f"{c}.png" for c in columns] + ["score.png"])
    assert all((tmp_path / "plots" / p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(plots)  # self-contained: images inline
    assert json.loads((tmp_path / "report.json").read_text())["is_drift"] is True
