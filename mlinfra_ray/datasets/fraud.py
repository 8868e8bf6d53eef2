"""Synthetic card transactions with fraud labels, realistic mess and an optional drift scenario.

Generative process (all draws from one seeded numpy Generator, so a seed gives the same bytes):
- Users: each has a home country, a log-mean spend mu_u ~ N(3.4, 0.5) and a channel preference.
- Transactions: event times uniform over `days` from `start`, with a night-time dip; user and
  merchant drawn uniformly; amount ~ LogNormal(mu_u, 0.8); channel from the user's preference;
  merchant category from the merchant; country = home country with p=0.9, else another country;
  distance_from_home_km ~ Exp(8 km) at home, Exp(900 km) abroad; device_age_days ~ Exp(300 days).
- Label: fraud ~ Bernoulli(sigmoid(z)), z = b + 2 * (0.9*(log amount - mu_u) + 1.2*[web]
  + 0.4*[app] + category effect (electronics/gaming/travel up, grocery/fuel down)
  + 0.7*log1p(distance)/3 + 1.6*[device_age < 30 days] + 0.9*[hour in 0..5]); the intercept b is
  solved numerically so the fraud rate matches `fraud_rate`. mu_u is never observed, so even a
  perfect model of the observable columns stays well below AUC-PR 1 (about 0.5 at 3% fraud).
- Drift scenario "shift": amounts x2.5, web share up, more travel/electronics, longer distances:
  what a new market or a fraud ring looks like to the model's inputs.

`write_raw` then writes the rows as CSV and JSON Lines with the mess seen in real feeds: five
timestamp formats (ISO-Z, SQL-style, day-first, epoch seconds, epoch ms), stray whitespace and
mixed case, missing optional and required fields, numeric garbage, unknown enum values, negative
amounts, rows with a wrong field count, malformed JSON lines, and re-sent duplicate rows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from mlinfra_ray.settings import SyntheticSettings

CHANNELS = np.array(["web", "pos", "app"])
CATEGORIES = np.array(["grocery", "electronics", "travel", "fashion", "gaming", "fuel", "restaurants"])
CATEGORY_EFFECT = np.array([-0.8, 1.0, 0.9, 0.2, 1.1, -0.6, -0.3])
COUNTRIES = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "NG", "JP", "CA"])
TS_FORMATS = ("iso_z", "sql", "day_first", "epoch_s", "epoch_ms")
FIELDS = ["transaction_id", "user_id", "merchant_id", "event_time", "amount", "channel",
          "merchant_category", "country", "distance_from_home_km", "device_age_days", "is_fraud"]


def generate_transactions(cfg: SyntheticSettings, drift: str | None = None,
                          seed: int | None = None) -> pa.Table:
    """Clean, typed transactions (the ground truth before any mess), sorted by event time."""
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    drift = cfg.drift if drift is None else drift
    shifted = drift == "shift"
    n = cfg.rows

    user_mu = rng.normal(3.4, 0.5, cfg.n_users)
    user_home = rng.integers(0, len(COUNTRIES), cfg.n_users)
    channel_pref = rng.dirichlet([4.0, 3.0, 2.0], cfg.n_users)
    merchant_cat = rng.integers(0, len(CATEGORIES), cfg.n_merchants)

    start = datetime.fromisoformat(cfg.start).replace(tzinfo=UTC).timestamp()
    seconds = rng.uniform(0, cfg.days * 86400, n)
    hour = (seconds % 86400) // 3600
    night = hour < 6  # fewer transactions at night: move a share of them to the afternoon
    seconds = np.where(night & (rng.random(n) < 0.5), seconds + 12 * 3600, seconds)
    seconds = np.minimum(seconds, cfg.days * 86400 - 1)
    epoch = np.sort(start + np.floor(seconds)).astype(np.int64)
    hour = (epoch % 86400) // 3600

    user = rng.integers(0, cfg.n_users, n)
    merchant = rng.integers(0, cfg.n_merchants, n)
    amount = np.round(rng.lognormal(user_mu[user], 0.8) * (2.5 if shifted else 1.0), 2)
    amount = np.maximum(amount, 0.01)
    cum = np.cumsum(channel_pref[user], axis=1)
    if shifted:
        cum = np.cumsum(0.5 * channel_pref[user] + 0.5 * np.array([0.8, 0.1, 0.1]), axis=1)
    channel = (rng.random(n)[:, None] > cum).sum(axis=1).clip(0, 2)
    category = merchant_cat[merchant]
    if shifted:
        swap = rng.random(n) < 0.35
        category = np.where(swap, rng.choice([1, 2], n), category)
    abroad = rng.random(n) < (0.3 if shifted else 0.1)
    country = np.where(abroad, rng.integers(0, len(COUNTRIES), n), user_home[user])
    distance = np.where(abroad, rng.exponential(900, n), rng.exponential(8, n))
    distance = np.round(distance * (3.0 if shifted else 1.0), 1)
    device_age = np.round(rng.exponential(300, n), 1)

    z = 2.0 * (0.9 * (np.log(amount) - user_mu[user]) + 1.2 * (channel == 0) + 0.4 * (channel == 2)
               + CATEGORY_EFFECT[category] + 0.7 * np.log1p(distance) / 3 + 1.6 * (device_age < 30)
               + 0.9 * (hour < 6))
    label = rng.random(n) < _sigmoid(z + _intercept(z, cfg.fraud_rate))

    return pa.table({
        "transaction_id": [f"tx{i:08d}" for i in range(n)],
        "user_id": [f"u{u:06d}" for u in user],
        "merchant_id": [f"m{m:05d}" for m in merchant],
        "event_time": pa.array(epoch * 1_000_000, pa.timestamp("us", tz="UTC")),
        "amount": amount,
        "channel": CHANNELS[channel],
        "merchant_category": CATEGORIES[category],
        "country": COUNTRIES[country],
        "distance_from_home_km": distance,
        "device_age_days": device_age,
        "is_fraud": label.astype(np.int64),
    })


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _intercept(z: np.ndarray, rate: float) -> float:
    """Bisection for b such that mean(sigmoid(z + b)) == rate."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _sigmoid(z + mid).mean() < rate else (lo, mid)
    return (lo + hi) / 2


def write_raw(table: pa.Table, out_dir: str | Path, cfg: SyntheticSettings) -> dict[str, int]:
    """Write `table` as messy CSV and JSON Lines files; returns counts of what was injected."""
    rng = np.random.default_rng(cfg.seed + 1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("*.csv"), *out.glob("*.jsonl")]:
        old.unlink()  # the raw folder is the generator's: re-running replaces, never appends
    rows = table.to_pylist()
    dup = rng.random(len(rows)) < cfg.mess.duplicate_rate
    rows += [dict(r) for r, d in zip(rows, dup, strict=True) if d]
    order = rng.permutation(len(rows))
    counts = {"rows_written": len(rows), "duplicates": int(dup.sum()), "corrupt": 0, "missing": 0}
    parts = np.array_split(order, cfg.files)
    for i, idx in enumerate(parts):
        as_json = i >= round(cfg.files * (1 - cfg.json_fraction))
        lines = [_messy_record(rows[j], rng, cfg, counts, as_json) for j in idx]
        suffix = "jsonl" if as_json else "csv"
        with open(out / f"transactions_{i:02d}.{suffix}", "w", encoding="utf-8") as fh:
            if not as_json:
                fh.write(",".join(FIELDS) + "\n")
            fh.write("\n".join(lines) + "\n")
    return counts


def _messy_record(row: dict, rng: np.random.Generator, cfg: SyntheticSettings,
                  counts: dict[str, int], as_json: bool) -> str:
    values: dict[str, object] = {k: row[k] for k in FIELDS}
    values["event_time"] = _format_ts(row["event_time"], TS_FORMATS[rng.integers(len(TS_FORMATS))])
    if rng.random() < 0.1:
        values["channel"] = f" {str(values['channel']).upper()} "
    if rng.random() < 0.05:
        values["country"] = str(values["country"]).lower()
    if rng.random() < cfg.mess.missing_rate:
        counts["missing"] += 1
        values[rng.choice(["distance_from_home_km", "device_age_days", "amount"])] = None
    if rng.random() < cfg.mess.corrupt_rate:
        counts["corrupt"] += 1
        kind = rng.integers(6)
        if kind == 5:
            return (values["transaction_id"] + ",broken row") if not as_json else '{"transaction_id": "'
        values.update([
            {"amount": "12,50 EUR"}, {"amount": -abs(float(row["amount"]))},
            {"channel": "w3b"}, {"event_time": "yesterday 10am"}, {"user_id": "??"},
        ][kind])
    if as_json:
        return json.dumps({k: v for k, v in values.items() if v is not None})
    return ",".join(_csv_field(values[k]) for k in FIELDS)


def _format_ts(ts: datetime, kind: str) -> str:
    if kind == "iso_z":
        return ts.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "sql":
        return ts.strftime("%Y-%m-%d %H:%M:%S")
    if kind == "day_first":
        return ts.strftime("%d/%m/%Y %H:%M")
    if kind == "epoch_s":
        return str(int(ts.timestamp()))
    return str(int(ts.timestamp() * 1000))


def _csv_field(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    return f'"{text}"' if "," in text else text
