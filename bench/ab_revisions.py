"""One benchmark, two code revisions, run alternately: is a change faster, beyond the box's drift?

    .venv/bin/python bench/ab_revisions.py --old HEAD~3              # bench/ingest.py, old vs working tree
    .venv/bin/python bench/ab_revisions.py --old v1 --new v2 --rounds 4 --bench ingest -- --repeat 3
    .venv/bin/python bench/ab_revisions.py --old HEAD~1 --bench-of new   # the harness changed: code alone

A single run's ratio drifts by ±15 % within minutes on shared machines, so a run of the old code
an hour ago says little about today's code. This runs `bench/<name>.py` of both revisions in turn
(old, new, old, new, …) with this checkout's interpreter, each revision from its own git worktree
(`PYTHONPATH` points there, so Ray's workers load that revision too), and compares the headline
ratios of the two by their medians. `--new` defaults to the working tree as it is (uncommitted
changes included). Takes `rounds` × 2 runs of the bench (~45 s each for ingest's defaults).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATIO = re.compile(r"^ratio (\S+) = ([-+0-9.eE]+|nan|inf)\s*$")


def worktree(rev: str, parent: Path) -> Path:
    """A detached checkout of `rev` (removed by `drop`)."""
    path = parent / re.sub(r"[^A-Za-z0-9_.-]", "_", rev)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(path), rev],
                   check=True, capture_output=True, text=True)
    return path


def drop(path: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)], capture_output=True)


def run_bench(tree: Path, name: str, args: list[str]) -> dict[str, float]:
    """The `ratio <name> = <value>` lines of one run of `tree`'s bench/<name>.py."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, str(tree / "bench" / f"{name}.py"), *args], cwd=tree, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/{name}.py in {tree} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    ratios = {m.group(1): float(m.group(2)) for line in proc.stdout.splitlines() if (m := RATIO.match(line))}
    if not ratios:
        raise SystemExit(f"bench/{name}.py in {tree} printed no 'ratio <name> = <value>' line")
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="git revision to compare against")
    ap.add_argument("--new", default=None, help="git revision (default: the working tree as it is)")
    ap.add_argument("--bench", default="ingest", help="bench/<name>.py to run (default: ingest)")
    ap.add_argument("--rounds", type=int, default=3, help="old/new pairs (default: 3)")
    ap.add_argument("--bench-of", choices=["each", "new"], default="each",
                    help="whose bench script runs: each revision its own (default), or the new one's "
                         "in both trees (when the harness itself changed, to compare the code alone)")
    ap.add_argument("bench_args", nargs="*", help="passed to the bench (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ab_revisions_") as tmp:
        trees = {"old": worktree(args.old, Path(tmp))}
        trees["new"] = worktree(args.new, Path(tmp)) if args.new else ROOT
        if args.bench_of == "new":
            script = f"bench/{args.bench}.py"
            (trees["old"] / script).write_bytes((trees["new"] / script).read_bytes())
        try:
            runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            for i in range(args.rounds):
                for side in ("old", "new"):
                    runs[side].append(run_bench(trees[side], args.bench, args.bench_args))
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in runs[side][-1].items())
                    print(f"round {i + 1} {side}: {shown}", flush=True)
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    drop(tree)
    names = [k for k in runs["new"][0] if all(k in r for r in runs["old"] + runs["new"])]
    print(f"\nbench/{args.bench}.py ({'the new revision' if args.bench_of == 'new' else 'each revision'}'s), "
          f"{args.rounds} alternated rounds: old = {args.old}, new = {args.new or 'working tree'}\n")
    print(f"{'ratio':40s} {'old median':>11s} {'new median':>11s} {'new/old':>8s}  new runs")
    for k in names:
        old = statistics.median(r[k] for r in runs["old"])
        new = statistics.median(r[k] for r in runs["new"])
        each = ", ".join(f"{r[k]:.3f}" for r in runs["new"])
        print(f"{k:40s} {old:11.3f} {new:11.3f} {new / old:8.3f}  {each}")
    for k in names:
        old = statistics.median(r[k] for r in runs["old"])
        print(f"ratio {k}_new_vs_old = {statistics.median(r[k] for r in runs['new']) / old:.3f}")


if __name__ == "__main__":
    main()
