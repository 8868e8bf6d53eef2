"""Feature store: online lookups (SQLite, Redis) and materialization, against baselines in the same run.

    .venv/bin/python bench/features.py                      # ~2 min on 2 cores
    .venv/bin/python bench/features.py --rows 1000000 --users 100000

Online lookup of 64 keys: `OnlineFeatures.lookup` (key validation against the contract, one
batched read, decoding) vs 64 single-key reads of the raw bytes (`read_one`: a GET / SELECT per
key, no validation, no decoding) on the same backend and keys. Reported p50/p99 of each; the
headline ratio is batched p50 / singles p50 on Redis (goal <= 0.5). Redis is a real
`redis-server` started here on a free loopback port (Debian's package).

Materialization: the offline view table (written by the real features path: Ray Data aggregation
of synthetic transactions) materialized whole into the online store — read the offline Parquet,
reduce to the latest row per entity, encode, upsert — in offline rows/s, divided by rows/s of a
plain `pyarrow.parquet.write_table` of the same table. Headline on the embedded default (SQLite),
Redis printed beside it (goal >= 0.3).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mlinfra_ray.cluster import connect, shutdown
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.datasets.fraud import generate_transactions
from mlinfra_ray.features.materialize import materialize_view
from mlinfra_ray.features.online import OnlineFeatures, OnlineStore, key_patterns, open_store
from mlinfra_ray.features.stage import offline_store
from mlinfra_ray.settings import OnlineStoreSettings

KEYS = 64


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """redis-server on 127.0.0.1:<free port>, no persistence; stopped by its PID."""
    import redis

    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server not found: apt-get install -y redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no", "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def percentiles(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """p50 and p99 of `fn` in milliseconds over n calls (after 20 warm-up calls)."""
    for _ in range(20):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def bench_lookups(store: OnlineStore, settings, entities: list[str], n: int, seed: int) -> dict[str, float]:
    view = settings.features.views[0]
    features = OnlineFeatures(store, [view], key_patterns(settings.contract))
    rng = np.random.default_rng(seed)
    batches = [list(rng.choice(entities, KEYS)) for _ in range(64)]
    it = iter(range(10**9))

    def batched() -> None:
        found, _, _ = features.lookup(view, batches[next(it) % 64])
        assert found.all()

    def singles() -> None:
        for key in batches[next(it) % 64]:
            assert store.read_one(view.name, key) is not None

    b50, b99 = percentiles(batched, n)
    s50, s99 = percentiles(singles, n)
    return {"batched_p50": b50, "batched_p99": b99, "singles_p50": s50, "singles_p99": s99, "ratio": b50 / s50}


def bench_materialize(offline, store: OnlineStore, view, repeats: int) -> dict[str, float]:
    table = offline.read_view(view.name).drop_columns(["write_id"])
    out = Path(tempfile.mkdtemp(prefix="bench-pq")) / "view.parquet"
    write_s, mat_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        pq.write_table(table, out)
        write_s.append(time.perf_counter() - t)
        store.clear(view.name)  # a full materialization each time: every offline row is read
        t = time.perf_counter()
        result = materialize_view(offline, store, view)
        mat_s.append(time.perf_counter() - t)
        assert result["full"] and result["rows_read"] == table.num_rows
    shutil.rmtree(out.parent, ignore_errors=True)
    w, m = statistics.median(write_s), statistics.median(mat_s)
    return {"rows": table.num_rows, "entities": result["entities_written"], "ratio": w / m,
            "pyarrow_rows_s": table.num_rows / w, "materialize_rows_s": table.num_rows / m}


def build_offline(root: str, rows: int, users: int):
    settings = compose_settings([f"paths.root={root}", f"data.synthetic.rows={rows}",
                                 f"data.synthetic.n_users={users}", "ray.num_cpus=2"])
    import ray

    connect(settings.ray)
    events = generate_transactions(settings.data.synthetic)
    store = offline_store(settings)
    view = settings.features.views[0]
    t = time.perf_counter()
    written = store.write_view(ray.data.from_arrow(events), view, settings.contract.event_time)
    print(f"offline view {view.name}: {written['rows']:,} rows from {rows:,} events in "
          f"{time.perf_counter() - t:.1f}s (Ray Data)")
    return settings, store, view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000, help="synthetic transactions")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--lookups", type=int, default=2_000, help="timed lookups per variant")
    parser.add_argument("--repeats", type=int, default=5, help="timed materializations per backend")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-features")
    try:
        settings, offline, view = build_offline(root, args.rows, args.users)
        shutdown()
        entities = offline.read_view(view.name)[view.entity].unique().to_pylist()
        results = {}
        with redis_server() as url:
            for kind, cfg in (("sqlite", OnlineStoreSettings(type="sqlite")),
                              ("redis", OnlineStoreSettings(type="redis", url=url))):
                store = open_store(cfg, root)
                mat = bench_materialize(offline, store, view, args.repeats)
                results[kind] = (bench_lookups(store, settings, entities, args.lookups, seed=1), mat)
                store.close()
        report(results)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict) -> None:
    print(f"\nonline lookup of {KEYS} keys (ms)      p50      p99")
    for kind, (lk, _) in results.items():
        print(f"  {kind:6} batched (ours)          {lk['batched_p50']:7.3f}  {lk['batched_p99']:7.3f}")
        print(f"  {kind:6} {KEYS} single-key reads     {lk['singles_p50']:7.3f}  {lk['singles_p99']:7.3f}")
        print(f"  {kind:6} ratio batched/singles p50  {lk['ratio']:.3f}  (goal <= 0.5)")
    print("\nmaterialization (full)   offline rows  entities   rows/s     pyarrow write rows/s   ratio")
    for kind, (_, m) in results.items():
        print(f"  {kind:6}                 {m['rows']:10,}  {m['entities']:8,}  "
              f"{m['materialize_rows_s']:10,.0f}   {m['pyarrow_rows_s']:14,.0f}        {m['ratio']:.2f}"
              "  (goal >= 0.3)")
    print(f"ratio online_batch_vs_single_gets = {results['redis'][0]['ratio']:.3f}")
    print(f"ratio online_batch_vs_single_gets_sqlite = {results['sqlite'][0]['ratio']:.3f}")
    print(f"ratio materialize_vs_pyarrow_write = {results['sqlite'][1]['ratio']:.2f}")
    print(f"ratio materialize_redis_vs_pyarrow_write = {results['redis'][1]['ratio']:.2f}")


if __name__ == "__main__":
    main()
