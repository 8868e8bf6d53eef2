"""Typed settings for every config group.

Hydra composes YAML; the library only ever sees these frozen dataclasses (and Ray workers and
deployments only ever see plain dicts made from them). `to_settings` is strict: an unknown key or a
wrong type fails at start-up with the dotted path of the offending key, instead of deep inside a
Ray worker minutes later.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class SettingsError(ValueError):
    """A config value that cannot become a setting; the message names the key."""


@dataclass(frozen=True)
class MessSettings:
    """How much realistic mess the synthetic generator writes into raw files."""

    missing_rate: float = 0.02  # optional fields left empty
    corrupt_rate: float = 0.01  # unparseable values, bad enums, negative amounts, broken lines
    duplicate_rate: float = 0.005  # rows re-sent with the same transaction id


@dataclass(frozen=True)
class SyntheticSettings:
    rows: int = 60_000
    seed: int = 7
    n_users: int = 2_000
    n_merchants: int = 300
    start: str = "2026-01-01"
    days: int = 60
    fraud_rate: float = 0.03
    drift: Literal["none", "shift"] = "none"
    json_fraction: float = 0.3  # share of rows written as JSON Lines instead of CSV
    files: int = 4
    mess: MessSettings = field(default_factory=MessSettings)


@dataclass(frozen=True)
class SplitSettings:
    """Time-ordered split fractions; test is the rest (the latest window)."""

    train: float = 0.7
    valid: float = 0.15


@dataclass(frozen=True)
class DataSettings:
    name: str
    synthetic: SyntheticSettings | None = None  # None: raw files already exist under paths.raw
    split: SplitSettings = field(default_factory=SplitSettings)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    type: Literal["string", "float", "int", "bool", "timestamp"]
    nullable: bool = False
    allowed: list[str] | None = None
    min: float | None = None
    max: float | None = None
    regex: str | None = None
    normalize: list[Literal["trim", "lower", "upper"]] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)  # timestamps: strptime formats, epoch_s, epoch_ms
    timezone: str = "UTC"


@dataclass(frozen=True)
class ContractSettings:
    name: str
    columns: list[ColumnSpec]
    event_time: str
    label: str
    entity_keys: list[str] = field(default_factory=list)
    dedup_key: str | None = None
    max_quarantine_fraction: float = 0.05
    extra_columns: Literal["drop", "keep"] = "drop"


@dataclass(frozen=True)
class NumericFeature:
    name: str
    log: bool = False  # log1p before scaling: heavy-tailed money amounts
    clip: list[float] | None = None
    indicator: bool | None = None  # a missing-value column; None: if the training window has gaps
    buckets: int = 0  # > 0: also one-hot quantile buckets (edges fitted on the training window)


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    max_vocab: int = 32  # rarer values share the out-of-vocabulary slot


@dataclass(frozen=True)
class HashedFeature:
    """High-cardinality IDs: one-hot of a stable hash (blake2b), no vocabulary to fit or ship."""

    name: str
    buckets: int = 32  # slot 0 is missing; values share buckets 1..buckets-1


@dataclass(frozen=True)
class FeatureView:
    """Entity aggregations over event-time windows (mlinfra_ray.features.aggregations)."""

    name: str
    entity: str  # an entity key of the contract; its regex validates online lookups
    column: str  # the value aggregated
    functions: list[Literal["count", "sum", "mean", "max"]] = field(default_factory=lambda: ["count"])
    windows: list[str] = field(default_factory=lambda: ["24h"])  # "30m", "1h", "24h", "7d"
    ttl: str = "7d"  # older values are missing: in the offline join and online alike
    since_last: bool = True  # seconds from the entity's previous event to the scored one


@dataclass(frozen=True)
class SkewCheckSettings:
    sample_entities: int = 200  # per view
    max_mismatch_fraction: float = 0.0  # jobs/skew_check.py exits non-zero above it
    seed: int = 7


@dataclass(frozen=True)
class FeatureSettings:
    numeric: list[NumericFeature]
    categorical: list[CategoricalFeature]
    time_parts: list[Literal["hour", "dow"]] = field(default_factory=list)
    hashed: list[HashedFeature] = field(default_factory=list)
    views: list[FeatureView] = field(default_factory=list)
    use_views: bool = False  # join views point-in-time into training; serving then needs an online store
    offline_path: str | None = None  # the offline store; None: <paths.root>/feature_store
    skew_check: SkewCheckSettings = field(default_factory=SkewCheckSettings)


@dataclass(frozen=True)
class OnlineStoreSettings:
    """Latest feature values per entity (mlinfra_ray.features.online): sqlite embedded, redis shared."""

    type: Literal["sqlite", "redis"] = "sqlite"
    path: str | None = None  # sqlite file; None: <paths.root>/online_store.sqlite
    url: str = "redis://127.0.0.1:6379/0"  # redis only
    namespace: str = "mlinfra"  # key prefix, so several deployments can share one Redis
    timeout_s: float = 2.0


@dataclass(frozen=True)
class ModelSettings:
    name: Literal["mlp"] = "mlp"
    hidden: list[int] = field(default_factory=lambda: [64, 32])
    dropout: float = 0.1


@dataclass(frozen=True)
class SliceSpec:
    """Report metrics per value of `column`, or per numeric bucket between `bins` edges."""

    column: str
    bins: list[float] | None = None


@dataclass(frozen=True)
class EvalSettings:
    slices: list[SliceSpec] = field(default_factory=list)
    calibration_bins: int = 10  # equal-width probability bins of the expected calibration error
    min_slice_rows: int = 50  # smaller slices report counts but no AUCs


@dataclass(frozen=True)
class TrainerSettings:
    max_epochs: int = 5
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    pos_weight: float | None = None  # None: negatives/positives of the training window
    patience: int = 3  # epochs without a better validation loss before stopping early
    max_failures: int = 1  # worker crashes survived by restarting from the last checkpoint
    seed: int = 7
    run_name: str | None = None  # None: a fresh unique name (never an accidental resume)
    resume: bool = False  # True: continue `run_name` from its last checkpoint if it exists
    monitor: Literal["valid_loss", "valid_auc_pr"] = "valid_loss"  # early stopping and best-k
    keep_checkpoints: int = 2  # best-k by `monitor`
    imbalance: Literal["pos_weight", "oversample", "none"] = "pos_weight"
    oversample_to: float = 0.2  # imbalance=oversample: positive share of the training rows
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    cache_shard: bool = True  # keep each worker's shard as tensors on its device after one pass
    shuffle: bool = True  # seeded per-epoch shuffle of the training shard
    calibrate: bool = True  # Platt scaling on the validation window, folded into the last layer
    fail_at_epoch: int | None = None  # fault injection: the last worker raises once at this epoch
    evaluation: EvalSettings = field(default_factory=EvalSettings)


@dataclass(frozen=True)
class ScalingSettings:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # None: planned so Ray Data keeps its reserved CPUs
    gpus_per_worker: float = 1.0
    # Custom resources each worker also needs, e.g. {cpu_worker: 1}: pins workers to a node type of
    # cluster.yaml (each such node advertises one unit, so workers also land on distinct nodes).
    worker_resources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ServeDemoSettings:
    clean_requests: int = 400
    drift_requests: int = 400
    records_per_request: int = 4


@dataclass(frozen=True)
class AutoscalingSettings:
    """Ray Serve autoscaling of the predictor (passed through as `autoscaling_config`)."""

    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 8.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 60.0


@dataclass(frozen=True)
class AuthSettings:
    """Optional API-key auth. Config names where the key lives; the key itself never sits in config."""

    enabled: bool = False
    api_key_env: str = "MLINFRA_API_KEY"  # name of the environment variable read by the ingress
    api_key_file: str | None = None  # a file holding the key (wins over the variable when set)
    public_paths: list[str] = field(default_factory=lambda: ["/healthz", "/readyz", "/metrics"])


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    app_name: str = "mlinfra"
    route_prefix: str = "/"
    predictor_replicas: int = 1
    autoscaling: AutoscalingSettings | None = None  # set: predictor_replicas is ignored
    colocate_predictor: bool = False  # score inside the ingress replica: one hop less, no scale-out
    # Ray Serve's direct ingress: the ingress replica answers HTTP on a port of its own, no proxy
    # hop. Ray must run with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (ray.env_vars; serve=low_latency).
    direct_ingress: bool = False
    max_batch_size: int = 64
    batch_wait_timeout_s: float = 0.0  # 0: batch what queued while the previous batch ran
    max_ongoing_requests: int = 32
    max_queued_requests: int = 256
    max_records_per_request: int = 1000
    max_body_bytes: int = 1_048_576  # larger bodies get 413 before they are parsed
    request_timeout_s: float = 30.0  # end to end at the proxy (serve.start); past it Serve answers 408
    cpus_per_replica: float = 0.25
    bundle_path: str | None = None  # a local bundle folder instead of the registry alias
    alias_poll_s: float = 10.0  # how often replicas re-resolve the alias (hot swap); 0: never
    online_store: str = "auto"  # serve/online.py: auto (what the model needs), none or feature_store
    auth: AuthSettings = field(default_factory=AuthSettings)
    demo: ServeDemoSettings = field(default_factory=ServeDemoSettings)


@dataclass(frozen=True)
class MMDSettings:
    """Multivariate MMD (alibi-detect, pytorch backend) on subsamples of reference and window."""

    enabled: bool = True
    reference_size: int = 500
    max_window: int = 500
    n_permutations: int = 100
    # At most one MMD per interval (other windows get the cheap tests only): one MMD costs ~0.5 s of
    # a core, so at high traffic testing every window would take a core away from serving.
    min_interval_s: float = 60.0


@dataclass(frozen=True)
class OnlineDriftSettings:
    """Optional MMDDriftOnline: per-record updates, threshold set for an expected run time."""

    enabled: bool = False
    ert: float = 500.0  # expected records between false alarms when there is no drift
    window_size: int = 50
    reference_size: int = 300
    n_bootstraps: int = 1000


@dataclass(frozen=True)
class DriftSettings:
    enabled: bool = True  # false: no monitor deployment, no hand-off (for overhead comparisons)
    window_size: int = 500
    p_val: float = 0.05  # family-wise level per window, split across the enabled tests
    correction: Literal["bonferroni", "fdr"] = "bonferroni"  # across per-feature tests
    reference_size: int = 2_000
    max_pending: int = 64  # fire-and-forget hand-offs in flight before new ones are dropped
    # Each record reaches the monitor with this probability (1.0: all). A uniform sample tests the
    # same distribution; windows fill 1/fraction times slower and cost that much less.
    sample_fraction: float = 1.0
    # Per scoring replica: past this sustained rate of scored records/s (10-s average), a uniform
    # sample of about this many goes to the monitor (None: no cap): same drift cost at any load.
    max_rows_per_s: float | None = 500.0
    # Added to the monitor process's OS niceness: on a CPU-bound node serving wins every contention
    # and the checks use what is left (a monitor that falls behind drops rows, counted).
    niceness: int = 19
    score_test: bool = False # KS test of prediction scores against the bundle's reference scores
    mmd: MMDSettings = field(default_factory=MMDSettings)
    online: OnlineDriftSettings = field(default_factory=OnlineDriftSettings)
    report_dir: str | None = None  # jobs/drift_report.py output; None: <paths.root>/reports/drift
    report_data: str | None = None  # parquet file/folder to compare; None: the clean lake


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: start a local cluster; "auto": join the running one
    num_cpus: int | None = None  # local clusters only; None: all cores
    data_reserved_cpus: float = 1.0  # CPUs Train must leave to Ray Data (the 2-CPU deadlock)
    include_dashboard: bool = True
    quiet: bool = True  # condensed logs, no progress bars when stdout is not a TTY
    # Environment Ray's own processes start with (Serve reads its mode flags once, at start):
    # applied to a local cluster we start; a cluster gets them before `ray start` (cluster.yaml).
    env_vars: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PromotionSettings:
    """The gate between the `challenger` and `champion` aliases (mlinfra_ray.promotion)."""

    metric: Literal["auc_pr", "auc_roc"] = "auc_pr"
    min_improvement: float = 0.005  # challenger must beat the champion by this on the same holdout
    max_calibration_error: float = 0.05  # sanity bound on the challenger's holdout ECE
    challenger_alias: str = "challenger"
    auto: bool = True  # run the gate right after training/tuning registers a challenger


@dataclass(frozen=True)
class TrackingSettings:
    uri: str
    artifact_location: str | None = None  # None: MLflow's default (./mlruns, relative to the cwd)
    experiment: str = "mlinfra"
    registered_model: str = "fraud-detector"
    alias: str = "champion"
    promotion: PromotionSettings = field(default_factory=PromotionSettings)


@dataclass(frozen=True)
class ParamSpec:
    """One search-space entry: uniform/loguniform/int need low+high; choice/grid need values."""

    type: Literal["uniform", "loguniform", "int", "choice", "grid"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None


@dataclass(frozen=True)
class AshaSettings:
    grace_period: int = 1  # epochs before a trial can be stopped
    reduction_factor: int = 2


@dataclass(frozen=True)
class TuneSettings:
    name: str | None = None  # None: a fresh sweep name; set it (with resume=true) to restore one
    resume: bool = False
    num_samples: int = 6
    metric: str = "valid_auc_pr"
    mode: Literal["min", "max"] = "max"
    searcher: Literal["optuna", "random"] = "optuna"
    scheduler: Literal["asha", "fifo"] = "asha"
    asha: AshaSettings = field(default_factory=AshaSettings)
    max_concurrent: int | None = None  # None: as many trials as the cluster's CPUs fit
    driver_cpus: float = 0.25  # each trial's driver process (it mostly waits on its workers)
    max_trial_failures: int = 0  # retries of a failed trial; the sweep goes on either way
    space: dict[str, ParamSpec] = field(default_factory=dict)  # dotted config key -> spec


@dataclass(frozen=True)
class PathSettings:
    root: str
    raw: str
    lake: str
    bundles: str
    storage: str  # Ray Train checkpoints and run state


@dataclass(frozen=True)
class Settings:
    data: DataSettings
    contract: ContractSettings
    features: FeatureSettings
    model: ModelSettings
    trainer: TrainerSettings
    scaling: ScalingSettings
    serve: ServeSettings
    drift: DriftSettings
    ray: RaySettings
    tracking: TrackingSettings
    paths: PathSettings
    seed: int = 7
    tune: TuneSettings = field(default_factory=TuneSettings)
    online_store: OnlineStoreSettings = field(default_factory=OnlineStoreSettings)


def build(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from plain data, checking keys and types; errors name the key."""
    if not isinstance(data, dict):
        raise SettingsError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SettingsError(f"{_join(where, unknown[0])}: unknown key (allowed: {sorted(known)})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], _join(where, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SettingsError(f"{_join(where, f.name)}: missing required key")
    return cls(**kwargs)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, where)
            except SettingsError as err:
                errors.append(str(err))
        raise SettingsError(errors[0] if errors else f"{where}: must not be null")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise SettingsError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SettingsError(f"{where}: expected a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SettingsError(f"{where}: expected a mapping, got {value!r}")
        _, item_tp = typing.get_args(tp)
        return {k: _coerce(item_tp, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise SettingsError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def to_dict(settings: Any) -> dict[str, Any]:
    """Plain, JSON-ready data for Ray workers, deployments, MLflow params and bundles."""
    return dataclasses.asdict(settings)


def resolve_paths(paths: PathSettings) -> PathSettings:
    """Absolute paths, so Ray workers and submitted jobs (other cwd) see the same files."""
    def absolute(value: str) -> str:
        return value if "://" in value else str(Path(value).expanduser().resolve())

    return PathSettings(**{k: absolute(v) for k, v in to_dict(paths).items()})
