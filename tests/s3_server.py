"""A real S3-compatible server (moto's standalone server) on 127.0.0.1:<free port>, stopped by PID.

Used by the ingest tests as a fixture factory: no mocked clients, the same pyarrow S3 filesystem
code that talks to AWS talks to this server over HTTP.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.procs import free_port, stop

KEY, SECRET, REGION = "testing", "testing", "us-east-1"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>

    @property
    def host_port(self) -> str:
        return self.endpoint.removeprefix("http://")

    def uri(self, bucket_path: str) -> str:
        """pyarrow URI with credentials and endpoint: what `ingest` and the Ray workers read."""
        return f"s3://{KEY}:{SECRET}@{bucket_path}?endpoint_override={self.host_port}&scheme=http&region={REGION}"

    def env(self) -> dict[str, str]:
        """The standard AWS environment pointing at this server (for jobs run as subprocesses)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY,
                            aws_secret_access_key=SECRET, region_name=REGION)

    def upload(self, bucket: str, folder: Path, prefix: str) -> list[str]:
        s3 = self.client()
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        keys = []
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            keys.append(f"{prefix}/{f.relative_to(folder)}")
            s3.put_object(Bucket=bucket, Key=keys[-1], Body=f.read_bytes())
        return keys


@contextlib.contextmanager
def moto_server() -> Iterator[S3Server]:
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("moto_server not found: pip install -e '.[dev]' (moto[server])")
    for _ in range(3):  # the free port can be taken between picking and binding it
        port = free_port()
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        server = S3Server(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(server.endpoint + "/", timeout=1)  # noqa: S310 - loopback only
                break
            except OSError:
                time.sleep(0.2)
        if proc.poll() is None and time.monotonic() < deadline:
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError("could not start moto_server on a free loopback port")
    try:
        yield server
    finally:
        stop(proc)
