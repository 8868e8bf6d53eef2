"""Submit `jobs/*.py` to a running Ray cluster as Ray Jobs: token auth on, a lean working dir.

    python -m mlinfra_ray.submit --address http://127.0.0.1:8265 -- python jobs/pipeline.py ray=cluster ...
    ray job submit --address http://127.0.0.1:8265 --working-dir . \\
        --runtime-env-json "$(python -m mlinfra_ray.submit --print-runtime-env)" -- python jobs/...

Both upload the same working dir: the code and conf/, never data, the venv, git history or caches
(EXCLUDES, mirrored by .rayignore for a bare `ray job submit`). A job's working dir has no .git, so
the code version travels as MLINFRA_GIT_SHA (read by mlinfra_ray.lineage). The token comes from
RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (Ray's own order) and is sent as a bearer
header; a cluster started with token auth answers 401 without it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlinfra_ray.cluster import QUIET_ENV
from mlinfra_ray.lineage import git_sha

# gitignore syntax; a leading "/" anchors at the working dir (a bare "data/" would also drop conf/data/).
# Data and outputs live under paths.root (.mlinfra/ by default); stray data files go by suffix.
EXCLUDES = ["/.git/", "/.venv/", "/.whl/", "/.mlinfra/", "/outputs/", "/multirun/", "/mlruns/", "/data/",
            "__pycache__/", ".pytest_cache/", ".ruff_cache/", ".hypothesis/", "*.egg-info/",
            "*.db", "*.parquet", "*.csv", "*.jsonl", "*.npy", "*.pt", "*.safetensors"]
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
DEFAULT_ADDRESS = "http://127.0.0.1:8265"  # the dashboard/jobs API, through `ray dashboard` on clusters


class AuthTokenMissing(RuntimeError):
    """No token where Ray looks for one; the message says how to get it."""


@dataclass(frozen=True)
class JobOutcome:
    submission_id: str
    status: str  # SUCCEEDED | FAILED | STOPPED, or the last status seen at the timeout
    logs: str


def runtime_env(sha: str | None = None) -> dict[str, Any]:
    """The runtime_env every job is submitted with (`working_dir` is added by the caller)."""
    return {"excludes": list(EXCLUDES),
            "env_vars": {"MLINFRA_GIT_SHA": sha or git_sha(), **QUIET_ENV}}


def auth_token() -> str:
    """The cluster token, looked up in Ray's order: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    raise AuthTokenMissing(f"no Ray auth token (RAY_AUTH_TOKEN unset, {path} missing): copy the "
                           "cluster's token there, or run `ray get-auth-token --generate` for a new one")


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {auth_token()}"}


def client(address: str = DEFAULT_ADDRESS) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=auth_headers())


def submit(entrypoint: str, address: str = DEFAULT_ADDRESS, working_dir: str | Path = ".",
           sha: str | None = None) -> str:
    """Submit `entrypoint` with the project's runtime_env; returns the submission id."""
    env = {**runtime_env(sha), "working_dir": str(Path(working_dir).resolve())}
    return client(address).submit_job(entrypoint=entrypoint, runtime_env=env)


def wait(submission_id: str, address: str = DEFAULT_ADDRESS, timeout_s: float = 1800.0,
         poll_s: float = 2.0) -> JobOutcome:
    """Poll until the job ends (or the timeout); returns its status and full logs."""
    jobs = client(address)
    deadline = time.monotonic() + timeout_s
    status = str(jobs.get_job_status(submission_id).value)
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(poll_s)
        status = str(jobs.get_job_status(submission_id).value)
    return JobOutcome(submission_id, status, jobs.get_job_logs(submission_id))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlinfra_ray.submit", description=__doc__.split("\n")[0])
    parser.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", DEFAULT_ADDRESS))
    parser.add_argument("--working-dir", default=".")
    parser.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    parser.add_argument("--timeout-s", type=float, default=1800.0)
    parser.add_argument("--print-runtime-env", action="store_true",
                        help="print the runtime_env JSON for `ray job submit --runtime-env-json`")
    parser.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- python jobs/<name>.py <overrides>")
    args = parser.parse_args(argv)
    if args.print_runtime_env:
        print(json.dumps(runtime_env()))
        return 0
    command = [a for a in args.entrypoint if a != "--"]
    if not command:
        parser.error("nothing to submit: add `-- python jobs/<name>.py <overrides>`")
    job_id = submit(shlex.join(command), args.address, args.working_dir)
    print(f"submitted {job_id} to {args.address}", flush=True)
    if args.no_wait:
        return 0
    outcome = wait(job_id, args.address, args.timeout_s)
    print(outcome.logs, end="" if outcome.logs.endswith("\n") else "\n")
    print(f"job {job_id}: {outcome.status}")
    return 0 if outcome.status == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())
