"""Fixtures shared by every tier. Services run for real, on loopback, and are stopped by PID."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.procs import free_port, stop


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server (Debian's package) on 127.0.0.1:<free port>, no persistence.

    Skipped where redis-server is not installed, unless MLINFRA_REQUIRE_REDIS=1 (CI sets it after
    installing the package, so a missing server fails there instead of silently skipping).
    """
    exe = shutil.which("redis-server")
    if exe is None:
        if os.environ.get("MLINFRA_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server not on PATH (apt-get install -y redis-server)")
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    import redis

    workdir = tmp_path_factory.mktemp("redis")
    for _ in range(3):  # the free port can be taken between picking and binding it
        port = free_port()
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", str(workdir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5)
        up, deadline = False, time.monotonic() + 20
        while not up and proc.poll() is None and time.monotonic() < deadline:
            try:
                up = bool(client.ping())
            except redis.RedisError:
                time.sleep(0.05)
        client.close()
        if up:
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("could not start redis-server on a free loopback port")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)
