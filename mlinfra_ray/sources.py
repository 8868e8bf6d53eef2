"""Where raw data comes from: files, folders and globs on local disk or `s3://`, and how each file is
cut into byte-range splits that Ray Data reads in parallel.

S3 settings come from the standard AWS environment (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, …) or
from pyarrow's URI syntax (`s3://key:secret@bucket/raw?endpoint_override=host:port&scheme=http`);
credentials and query travel with every file URI so Ray workers reach the same store, but they are
never displayed (reports, quarantine rows and the manifest show `s3://bucket/raw/file.csv`).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow.fs as pafs
from blake3 import blake3

SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
            ".parquet": "parquet", ".pq": "parquet"}
# Splits are also the unit of the content hash, so this size is part of the hash definition:
# a file up to SPLIT_BYTES hashes to its plain BLAKE3 (what `b3sum` prints); a larger one to the
# BLAKE3 of its splits' hex digests (computed in parallel by the tasks that read them).
# 12 MiB: against 16 MiB, bench/ab_revisions.py (200 MB on 2 CPUs) measured +3.9 % and +1.9 % at the
# same CPU time (the first block leaves sooner, the last one is smaller); 8 MiB −8 % and 24 MiB −7 %.
SPLIT_BYTES = 12 * 1024 * 1024
GLOB_CHARS = re.compile(r"[*?\[]")


class RawInputError(ValueError):
    """A raw input that cannot be read at all (bad encoding, unknown kind, bad header); names the file."""


@dataclass(frozen=True)
class RawFile:
    uri: str = field(repr=False)  # what readers open (may carry S3 credentials and query)
    display: str  # what reports and quarantine rows show
    kind: str  # csv | jsonl | parquet
    size: int
    mtime_ns: int

    @property
    def fingerprint(self) -> str:
        """Cheap identity from the listing: unchanged files are skipped without being read."""
        return f"{self.display}|{self.size}|{self.mtime_ns}"


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().resolve())


def split_query(uri: str) -> tuple[str, str]:
    """("s3://b/k", "?endpoint_override=…") — the query is configuration, not part of the name."""
    base, sep, query = uri.partition("?")
    return base, sep + query


def redact(uri: str | list[str]) -> str:
    """A source as it may be shown: no credentials, no query."""
    if isinstance(uri, list):
        return ", ".join(redact(u) for u in uri)
    base, _ = split_query(uri)
    read_prefix, show_prefix = _schemes(base)
    return show_prefix + base[len(read_prefix):] if read_prefix else base


def _schemes(base: str) -> tuple[str, str]:
    """("s3://key:secret@", "s3://") for reading and for display; ("", "") for local paths."""
    if "://" not in base:
        return "", ""
    scheme, rest = base.split("://", 1)
    authority = rest.split("/", 1)[0]
    userinfo = authority.rsplit("@", 1)[0] + "@" if "@" in authority else ""
    return f"{scheme}://{userinfo}", f"{scheme}://"


def list_raw_files(source: str | list[str]) -> list[RawFile]:
    """Data files under each source (file, folder or glob), de-duplicated, in a stable order."""
    sources = [source] if isinstance(source, str) else list(source)
    found: dict[str, RawFile] = {}
    for src in sources:
        for f in _list_one(src):
            found.setdefault(f.display, f)
    return [found[k] for k in sorted(found)]


def _list_one(source: str) -> list[RawFile]:
    base, query = split_query(source)
    root, pattern = _glob_root(base)
    fs, path = filesystem(root + query)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{redact(base)}: no such file or folder")
    infos = [info] if info.type == pafs.FileType.File else \
        fs.get_file_info(pafs.FileSelector(path, recursive=True))
    read_prefix, show_prefix = _schemes(base)
    out = []
    for i in infos:
        kind = SUFFIXES.get(PurePosixPath(i.path).suffix.lower())
        if i.type != pafs.FileType.File or kind is None or _hidden(i.path, path):
            continue
        if pattern is not None and not _glob_match(i.path[len(path):].lstrip("/"), pattern):
            continue
        out.append(RawFile(read_prefix + i.path + query, show_prefix + i.path, kind, int(i.size or 0),
                           int(i.mtime_ns or 0)))
    return out


def _hidden(path: str, root: str) -> bool:
    """Dot files and _SUCCESS-style markers are not data (Spark/Hadoop writers leave them around)."""
    rel = path[len(root):].lstrip("/")
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _glob_root(base: str) -> tuple[str, str | None]:
    """Split `s3://b/raw/2026-*/*.csv` into the folder to list and the pattern below it."""
    m = GLOB_CHARS.search(base)
    if m is None:
        return base, None
    cut = base.rfind("/", 0, m.start())
    if cut < 0 and "://" not in base:
        return ".", base
    if cut < 0 or base[:cut].endswith(":/"):
        raise ValueError(f"{redact(base)}: a glob needs a fixed folder before its first wildcard")
    return base[:cut], base[cut + 1:]


def _glob_match(rel: str, pattern: str) -> bool:
    """Shell-style match per path segment; `**` matches any number of folders."""
    parts, pats = rel.split("/"), pattern.split("/")
    if not pats:
        return not parts
    if pats[0] == "**":
        return any(_glob_match("/".join(parts[i:]), "/".join(pats[1:])) for i in range(len(parts)))
    if not parts or not fnmatch.fnmatchcase(parts[0], pats[0]):
        return False
    if len(pats) == 1:
        return len(parts) == 1
    return _glob_match("/".join(parts[1:]), "/".join(pats[1:]))


def plan_splits(files: list[RawFile], first_index: int = 0) -> list[dict]:
    """Byte-range splits (plain dicts, for Ray): line-based files are cut every SPLIT_BYTES;
    Parquet files are read whole (their own row groups are not line-addressable)."""
    splits = []
    for file_index, f in enumerate(files):
        bounds = [0, f.size] if f.kind == "parquet" or f.size <= SPLIT_BYTES else \
            [*range(0, f.size, SPLIT_BYTES), f.size]
        for part, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            splits.append({**asdict(f), "file_index": file_index, "split": first_index + len(splits),
                           "part": part, "parts": len(bounds) - 1, "start": start, "end": end})
    return splits  # an empty file still gets one (empty) split: it is an input like any other


def content_hash(data: bytes | memoryview) -> str:
    """BLAKE3, hex: a 256-bit cryptographic hash like SHA-256, ~6x faster on one core (16 MiB:
    2.3 ms against 14 ms here; every split is hashed, so SHA-256 was ~7 % of a read task)."""
    return blake3(data).hexdigest()


def file_digest(part_digests: list[str]) -> str:
    """A file's content hash from its splits' digests (see SPLIT_BYTES)."""
    if len(part_digests) == 1:
        return part_digests[0]
    return content_hash("".join(part_digests).encode())
