"""Training throughput: the product's TorchTrainer loop against a plain torch loop, same run.

    .venv/bin/python bench/train.py                 # CPU: 2 DDP workers vs plain torch (~3 min on 2 cores)
    .venv/bin/python bench/train.py --gpu-rows 2000000   # on a GPU machine, adds the GPU half

CPU: epoch time (train pass + validation pass, measured inside the loop) of `mlinfra_ray.train.fit`
with 2 CPU workers (DDP over gloo, shards fed by Ray Data) divided by the epoch time of a plain
torch loop doing the same work in one process (same model, optimizer, loss, batch size, clipping,
validation AUC-PR; tensors already in memory; torch's default threads). Steady state = epochs after
the first, when each worker's shard is cached as tensors (trainer.cache_shard=true); streaming =
cache_shard=false, every epoch through `iter_torch_batches`. Goal: steady-state ratio <= 1.3.

GPU (skipped without CUDA): training rows/s of one GPU worker with bf16 autocast, fed by Ray Data,
divided by rows/s of a plain bf16 loop over GPU-resident tensors; resident = shard cached on the
device after one pass, streaming = every epoch from Ray Data. Goals: >= 0.9 resident, >= 0.7
streaming.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa
import torch
from sklearn.metrics import average_precision_score

from mlinfra_ray.cluster import connect, plan_training, shutdown
from mlinfra_ray.compose import compose_settings
from mlinfra_ray.models import build_model
from mlinfra_ray.settings import to_dict
from mlinfra_ray.train.steps import autocast_dtype, evaluate, train_epoch
from mlinfra_ray.train.trainer import fit


def make_data(rows: int, features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ~ N(0, 1); labels from one fixed logistic rule (~8 % positives) for every split."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, features), dtype=np.float32)
    w = np.random.default_rng(1234).standard_normal(features).astype(np.float32) / np.sqrt(features)
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(2 * x @ w - 3.5)))).astype(np.float32)
    return x, y


def to_dataset(x: np.ndarray, y: np.ndarray):
    """A materialized Ray Dataset of {"x": [F], "y"} rows, the shape `featurize` produces."""
    import ray

    table = pa.table({"i": np.arange(len(y))})

    def rows(batch: pa.Table) -> dict[str, np.ndarray]:
        i = batch.column("i").to_numpy()
        return {"x": x[i], "y": y[i]}

    return ray.data.from_arrow(table).map_batches(rows, batch_format="pyarrow").materialize()


def plain_epochs(settings, x, y, xv, yv, epochs: int, device: str) -> list[dict[str, float]]:
    """The same work as one worker group, in one process over in-memory tensors."""
    torch.manual_seed(settings.trainer.seed)
    dev = torch.device(device)
    tr = settings.trainer
    model = build_model(to_dict(settings.model), x.shape[1]).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tr.lr, weight_decay=tr.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(10.0, device=dev))
    amp = autocast_dtype(tr.precision, dev)
    xt, yt = torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)
    xvt, yvt = torch.from_numpy(xv).to(dev), torch.from_numpy(yv).to(dev)
    out = []
    for epoch in range(epochs):
        started = time.perf_counter()
        order = torch.randperm(len(yt), generator=torch.Generator().manual_seed(epoch)).to(dev)
        batches = ({"x": xt[order[i:i + tr.batch_size]], "y": yt[order[i:i + tr.batch_size]]}
                   for i in range(0, len(yt), tr.batch_size))
        total, rows = train_epoch(model, opt, loss_fn, batches, tr.grad_clip, amp)
        _sync(dev)
        train_s = time.perf_counter() - started
        vb = ({"x": xvt[i:i + tr.batch_size], "y": yvt[i:i + tr.batch_size]}
              for i in range(0, len(yvt), tr.batch_size))
        _, _, logits, labels = evaluate(model, loss_fn, vb, amp)
        average_precision_score(labels.numpy(), torch.sigmoid(logits).numpy())
        out.append({"epoch": epoch, "train_s": train_s, "epoch_s": time.perf_counter() - started,
                    "train_rows": float(rows), "train_loss": total / rows})
    return out


def trainer_epochs(settings, cluster, x, y, xv, yv) -> list[dict[str, float]]:
    datasets = {"train": to_dataset(x, y), "valid": to_dataset(xv, yv)}
    plan = plan_training(settings.scaling, settings.ray, cluster)
    return fit(datasets, x.shape[1], 10.0, settings, plan).history


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def bench_cpu(args, root: str) -> dict[str, float]:
    common = [f"paths.root={root}", f"trainer.max_epochs={args.epochs}", "trainer.patience=100",
              f"trainer.batch_size={args.batch_size}", "scaling.num_workers=2", "trainer.max_failures=0"]
    x, y = make_data(args.rows, args.features, 0)
    xv, yv = make_data(args.rows // 10, args.features, 1)
    cached = compose_settings(common + ["trainer.cache_shard=true"])
    cluster = connect(cached.ray)
    plain = {}
    for threads in sorted({1, os.cpu_count() or 1}):  # the baseline is the faster thread setting
        torch.set_num_threads(threads)
        plain[threads] = _median(plain_epochs(cached, x, y, xv, yv, args.epochs, "cpu")[1:], "epoch_s")
    ray_cached = trainer_epochs(cached, cluster, x, y, xv, yv)
    ray_stream = trainer_epochs(compose_settings(common + ["trainer.cache_shard=false"]), cluster, x, y, xv, yv)
    p = min(plain.values())
    rows = [*[(f"plain torch, 1 process, {t} thread(s)", v) for t, v in plain.items()],
            ("TorchTrainer 2 workers, cached shard (epochs 2+)", _median(ray_cached[1:], "epoch_s")),
            ("TorchTrainer 2 workers, first epoch (streamed)", ray_cached[0]["epoch_s"]),
            ("TorchTrainer 2 workers, streaming every epoch", _median(ray_stream[1:], "epoch_s"))]
    print(f"\nCPU: {args.rows:,} rows x {args.features} features, batch {args.batch_size}, "
          f"MLP {cached.model.hidden}, {args.epochs} epochs, {cluster.get('CPU', 0):g} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; valid AUC-PR {ray_cached[-1]['valid_auc_pr']:.3f}")
    print(f"{'configuration':<52}{'epoch s (median)':>18}{'ratio':>10}")
    for name, seconds in rows:
        print(f"{name:<52}{seconds:>18.3f}{seconds / p:>10.2f}")
    return {"train_cpu_vs_plain": rows[-3][1] / p, "train_cpu_vs_plain_streaming": rows[-1][1] / p}


def bench_gpu(args, root: str) -> dict[str, float]:
    common = [f"paths.root={root}", "scaling=gpu_1x", f"trainer.max_epochs={args.epochs}",
              "trainer.batch_size=8192", "trainer.patience=100", "trainer.max_failures=0",
              "trainer.precision=bf16", "trainer.shuffle=false", "model.dropout=0.0",
              f"model.hidden=[{args.gpu_hidden},{args.gpu_hidden}]"]
    x, y = make_data(args.gpu_rows, 64, 0)
    xv, yv = make_data(max(args.gpu_rows // 40, 8192), 64, 1)
    resident = compose_settings(common + ["trainer.cache_shard=true"])
    cluster = connect(resident.ray)
    plain = plain_epochs(resident, x, y, xv, yv, args.epochs, "cuda")
    ray_res = trainer_epochs(resident, cluster, x, y, xv, yv)
    ray_stream = trainer_epochs(compose_settings(common + ["trainer.cache_shard=false"]), cluster, x, y, xv, yv)

    def rate(h: list[dict[str, float]]) -> float:
        return statistics.median(r["train_rows"] / r["train_s"] for r in h[1:])

    p = rate(plain)
    print(f"\nGPU ({torch.cuda.get_device_name(0)}): {args.gpu_rows:,} rows x 64 features, batch 8192, "
          f"3-layer MLP ({args.gpu_hidden} wide), bf16, {args.epochs} epochs")
    print(f"{'configuration':<52}{'rows/s (median)':>18}{'ratio':>10}")
    resident_rate, stream_rate = rate(ray_res), rate(ray_stream)
    for name, r in [("plain torch, GPU-resident tensors", p),
                    ("TorchTrainer 1 GPU, shard cached on device", resident_rate),
                    ("TorchTrainer 1 GPU, Ray Data streaming", stream_rate)]:
        print(f"{name:<52}{r:>18,.0f}{r / p:>10.2f}")
    return {"train_gpu_vs_plain_resident": resident_rate / p, "train_gpu_vs_plain_streaming": stream_rate / p}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--gpu-rows", type=int, default=2_000_000)
    ap.add_argument("--gpu-hidden", type=int, default=512)
    ap.add_argument("--skip-cpu", action="store_true")
    args = ap.parse_args()
    ratios: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as root:
        try:
            if not args.skip_cpu:
                ratios.update({k: f"{v:.3f}" for k, v in bench_cpu(args, root).items()})
            if torch.cuda.is_available():
                ratios.update({k: f"{v:.3f}" for k, v in bench_gpu(args, root).items()})
            else:
                print("\nGPU: skipped (no CUDA on this machine)")
                ratios.update({"train_gpu_vs_plain_resident": "n/a (no CUDA)",
                               "train_gpu_vs_plain_streaming": "n/a (no CUDA)"})
        finally:
            shutdown()
    print()
    for name, value in ratios.items():
        print(f"ratio {name} = {value}")


if __name__ == "__main__":
    main()
