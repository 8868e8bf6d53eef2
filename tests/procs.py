"""Process helpers shared by every test tier: services run for real on loopback and are stopped by PID."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess

PORTS_FROM = 20000  # above Ray's default worker ports (10002-19999)


def free_port() -> int:
    """A loopback port that is free now and that the kernel will not hand out on its own.

    A port bound to 0 comes from the ephemeral range, so until the test's server binds it any
    outgoing connection may take it (CI saw Serve fail to bind such a port minutes later: Ray opens
    many connections meanwhile). Ports between Ray's worker ports (10002-19999 by default) and the
    ephemeral range are only used when asked for; another test could still pick the same one, so
    the choice is random and checked."""
    low = _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(PORTS_FROM, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:  # taken: try another
                continue
            return port
    with socket.socket() as s:  # nothing free below the ephemeral range: the old way
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return max(low, PORTS_FROM + 1000)


def stop(proc: subprocess.Popen, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """`sig` (SIGTERM), then SIGKILL if it has not exited within `timeout_s` — to its whole process
    group when it leads one (started with start_new_session: Ray's own processes go with it)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # not a group leader
            proc.kill()
        proc.wait()
