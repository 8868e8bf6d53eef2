"""Helpers for e2e tests that run their own Ray cluster processes on this machine.

Never `ray stop`: it kills every Ray process of the user, including other test sessions' clusters.
Each cluster here gets a unique, short temp dir (unix socket paths are limited to ~107 bytes); the
temp dir appears on the command line of the head's processes (GCS, raylet, dashboard, monitors),
and workers, job supervisors and job drivers are their descendants, so "every process whose command
line names the temp dir, plus its descendants" is exactly this cluster, and nothing else.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlinfra_ray.submit import runtime_env
from tests.procs import free_port

VENV_BIN = str(Path(sys.executable).parent)
REPO = Path(__file__).resolve().parents[2]


def short_temp_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def token_env(token: str) -> dict[str, str]:
    """This process's environment with token auth forced on and no stray cluster address."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
               RAY_USAGE_STATS_ENABLED="0")
    return env


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry)] = (ppid, cmd)
    return out


def cluster_pids(marker: str) -> set[int]:
    """Processes whose command line contains `marker`, and all their descendants (never this one)."""
    procs = _processes()
    mine = {os.getpid()}
    pid = os.getpid()
    while pid in procs and pid > 1:  # ancestors: pytest and its parents are never part of it
        pid = procs[pid][0]
        mine.add(pid)
    found = {p for p, (_, cmd) in procs.items() if marker in cmd} - mine
    grew = True
    while grew:
        kids = {p for p, (pp, _) in procs.items() if pp in found and p not in found}
        found |= kids - mine
        grew = bool(kids - mine)
    return found


def stop_cluster(marker: str, timeout_s: float = 10.0) -> set[int]:
    """SIGTERM the cluster's processes, SIGKILL what is left after `timeout_s`; the pids still alive."""
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        for pid in cluster_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while cluster_pids(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
    return cluster_pids(marker)


@dataclass
class Head:
    temp_dir: str
    gcs_port: int
    dashboard_port: int
    token: str = field(repr=False)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def env(self) -> dict[str, str]:
        return token_env(self.token)

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def start_head(num_cpus: int = 2, timeout_s: int = 600) -> Head:
    """`ray start --head` on loopback ports picked free, token auth on, own temp dir."""
    head = Head(short_temp_dir("rh"), free_port(), free_port(), secrets.token_hex(32))
    cmd = ["ray", "start", "--head", "--node-ip-address=127.0.0.1", f"--port={head.gcs_port}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={head.dashboard_port}",
           f"--ray-client-server-port={free_port()}", f"--num-cpus={num_cpus}",
           # the agent's HTTP port (jobs go through it) defaults to a fixed 52365: with another
           # cluster on this machine the agent cannot bind and every submit answers "No available agent"
           f"--dashboard-agent-listen-port={free_port()}",
           f"--temp-dir={head.temp_dir}", "--disable-usage-stats"]
    proc = subprocess.run(cmd, env=head.env, capture_output=True, text=True, timeout=timeout_s)
    try:
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed: {proc.stdout[-2000:]}{proc.stderr[-4000:]}")
        wait_for_jobs_api(head, timeout_s)
    except BaseException:
        stop_cluster(head.temp_dir)
        raise
    return head


def wait_for_jobs_api(head: Head, timeout_s: float) -> None:
    """`ray start` returns before the head's agent takes jobs ("No available agent to submit job"):
    submit a no-op job until it is accepted, then wait for it to finish."""
    import httpx

    deadline, last = time.monotonic() + timeout_s, ""
    with httpx.Client(base_url=head.dashboard_url, headers=head.auth_headers, timeout=30) as http:
        while time.monotonic() < deadline:
            resp = http.post("/api/jobs/", json={"entrypoint": "true"})
            if resp.status_code == 200:
                job_id = resp.json()["submission_id"]
                while time.monotonic() < deadline:
                    if http.get(f"/api/jobs/{job_id}").json()["status"] == "SUCCEEDED":
                        return
                    time.sleep(0.5)
            last = f"{resp.status_code} {resp.text[:300]}"
            time.sleep(1.0)
    raise TimeoutError(f"the jobs API at {head.dashboard_url} did not take a job in {timeout_s} s: {last}")


def cli_submit(head: Head, entrypoint: list[str], sha: str, timeout_s: int = 900) -> tuple[int, str]:
    """`ray job submit` from the repo root with the project's runtime_env, as the README documents it:
    (exit code, stdout + stderr)."""
    cmd = ["ray", "job", "submit", "--address", head.dashboard_url, "--working-dir", ".",
           "--runtime-env-json", json.dumps(runtime_env(sha)), "--", *entrypoint]
    proc = subprocess.run(cmd, cwd=REPO, env=head.env, capture_output=True, text=True, timeout=timeout_s)
    return proc.returncode, proc.stdout + proc.stderr
