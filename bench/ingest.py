"""Ingest throughput against plain pyarrow, on the same messy CSV and the same cores.

    .venv/bin/python bench/ingest.py                 # ~200 MB CSV (2.7M rows), cached under /tmp
    .venv/bin/python bench/ingest.py --rows 300000   # a quick look

Ours ("read + validate + route"): Ray Data tasks read byte-range splits (bytes read once, hashed,
line-counted), parse them as text, apply the fraud contract with Arrow kernels; the driver orders
the blocks, routes rows to clean / quarantine / duplicate (file line numbers for the quarantined
rows; clean rows get theirs when gathered for the lake, as in `ingest()`) and checks the
accounting. Baseline: `pyarrow.csv.read_csv(path)` with default options (multi-threaded, type
inference) plus `invalid_row_handler=skip`, the least it needs to get through the broken lines
at all. Both run in this process's machine with the same cores; Ray is started once (a long-lived
cluster). Each timing is the median of --repeat runs after --warmup untimed runs of both: the first
runs in a process are much slower for both sides (allocator and object-store pages are faulted in;
measured 1.8 s vs 0.7 s for pyarrow), so a median that includes them flatters the slower side.
The first (cold) run of each is printed too. Also reported, not part of the
ratio: the whole `ingest()` (plus report, Parquet writes and manifest) on an empty lake.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.csv as pacsv  # noqa: E402

from mlinfra_ray.compose import compose_settings  # noqa: E402
from mlinfra_ray.datasets.fraud import generate_transactions, write_raw  # noqa: E402
from mlinfra_ray.ingest import ingest  # noqa: E402
from mlinfra_ray.ingest_read import read_split_lines, read_validated  # noqa: E402
from mlinfra_ray.routing import route  # noqa: E402
from mlinfra_ray.settings import SyntheticSettings  # noqa: E402
from mlinfra_ray.sources import list_raw_files  # noqa: E402


def messy_csv(rows: int, folder: Path) -> Path:
    """The project's generator (five timestamp formats, garbage, broken lines, duplicates), one file."""
    cfg = SyntheticSettings(rows=rows, files=1, json_fraction=0.0, n_users=20_000, n_merchants=2_000, days=365)
    out = folder / f"messy_{rows}"
    path = out / "transactions_00.csv"
    if not path.exists():
        print(f"generating {rows:,} rows of messy CSV under {out} (once; cached) …", flush=True)
        write_raw(generate_transactions(cfg), out, cfg)
    return path


def cpu_seconds() -> float:
    """CPU time of this process and its descendants (a local Ray cluster's raylet and workers),
    from /proc: Linux, like the machines this runs on; no extra dependency."""
    tick, parent, used = os.sysconf("SC_CLK_TCK"), {}, {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parent[int(pid)], used[int(pid)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        children = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(children)
        frontier = children
    return sum(used.get(p, 0.0) for p in tree)


def interleaved(fns: dict, repeat: int, warmup: int) -> tuple[dict[str, float], dict[str, float], dict,
                                                          dict[str, float]]:
    """Median wall and CPU seconds per function over the runs after `warmup`, runs interleaved
    (A B A B …) so load drift from other processes hits both alike; plus each one's first run."""
    walls: dict[str, list[float]] = {k: [] for k in fns}
    cpus: dict[str, list[float]] = {k: [] for k in fns}
    out: dict = {}
    for _ in range(warmup + repeat):
        for name, fn in fns.items():
            started, cpu = time.perf_counter(), cpu_seconds()
            out[name] = fn()
            walls[name].append(time.perf_counter() - started)
            cpus[name].append(cpu_seconds() - cpu)
    for name, times in walls.items():
        print(f"  {name} runs: " + ", ".join(f"{t:.2f}" for t in times) + f" s (first {warmup} untimed)")
    median = statistics.median
    return ({k: median(v[warmup:]) for k, v in walls.items()}, {k: median(v[warmup:]) for k, v in cpus.items()},
            out, {k: v[0] for k, v in walls.items()})


def full_ingest(path: Path, contract) -> tuple[float, dict[str, float]]:
    lake = Path(tempfile.mkdtemp(prefix="bench_lake_"))
    try:
        started = time.perf_counter()
        result = ingest(str(path), str(lake), contract)
        return time.perf_counter() - started, result.timings
    finally:
        shutil.rmtree(lake, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_700_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "mlinfra_bench_ingest"))
    args = ap.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    import ray
    from ray.data import DataContext

    path = messy_csv(args.rows, Path(args.cache))
    size_mb = path.stat().st_size / 1e6
    contract = compose_settings([]).contract
    cores = os.cpu_count() or 1
    ray.init(num_cpus=cores, include_dashboard=False, logging_config=ray.LoggingConfig(log_level="WARNING"))
    DataContext.get_current().enable_progress_bars = False
    files = list_raw_files(str(path))
    read_validated(list_raw_files(str(messy_csv(20_000, Path(args.cache)))), contract)  # warm the workers

    def ours():  # what ingest() does before writing
        table, _, first_line = read_split_lines(files, contract)
        return route(table, contract, first_line=first_line)

    def baseline():
        return pacsv.read_csv(str(path), parse_options=pacsv.ParseOptions(invalid_row_handler=lambda r: "skip"))

    medians, cpus, out, first = interleaved({"base": baseline, "ours": ours}, args.repeat, args.warmup)
    t_base, t_ours, base_table, routed = medians["base"], medians["ours"], out["base"], out["ours"]
    rows_in = len(routed.outcome)
    t_full, phases = full_ingest(path, contract)
    ray.shutdown()

    print(f"\nmessy CSV: {size_mb:.0f} MB, {rows_in:,} data lines ({base_table.num_rows:,} parsed by pyarrow), "
          f"{cores} cores, median of {args.repeat} after {args.warmup} warm-up runs")
    print(f"outcome: clean {routed.clean.num_rows:,} + quarantined {routed.quarantine.num_rows:,} "
          f"+ duplicates {routed.duplicates:,}\n")
    print(f"{'pipeline':52s} {'seconds':>8s} {'rows/s':>12s} {'MB/s':>8s} {'CPU s':>7s}")
    for name, t, cpu in [("pyarrow.csv.read_csv (baseline)", t_base, cpus["base"]),
                         ("ours: read + validate + route", t_ours, cpus["ours"]),
                         ("ours: full ingest() incl. report, Parquet, manifest", t_full, float("nan"))]:
        print(f"{name:52s} {t:8.2f} {rows_in / t:12,.0f} {size_mb / t:8.1f} {cpu:7.2f}")
    print("full ingest() phases: " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {cores} cores (other processes skew both)")
    print(f"first (cold) runs: pyarrow {first['base']:.2f} s, ours {first['ours']:.2f} s")
    print(f"\nratio ingest_vs_pyarrow_first_run = {first['base'] / first['ours']:.3f}")
    print(f"ratio ingest_vs_pyarrow_cpu = {cpus['base'] / cpus['ours']:.3f}")
    print(f"ratio full_ingest_vs_pyarrow = {t_base / t_full:.3f}")
    print(f"ratio ingest_vs_pyarrow = {t_base / t_ours:.3f}")


if __name__ == "__main__":
    main()
