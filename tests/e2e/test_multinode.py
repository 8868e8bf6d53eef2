"""Several nodes: a head and two worker nodes on this machine (ray.cluster_utils.Cluster, custom
resources standing in for cluster.yaml's node types), token auth on. The unchanged pipeline job
joins it (`ray.address=<gcs>`) with the multi-node scaling preset: its two DDP workers must land on
the two different `cpu_worker` nodes, Ray Train checkpoints go to S3 (a real S3-compatible server on
loopback, moto_server; every node gets the standard AWS environment, as instance profiles give on a
cloud cluster) while the lake and bundles use a path every node shares, and the Serve app's
predictor replicas spread over more than one node while serving the same predictions as offline.

About 2-3 minutes on 2 cores.
"""

import json
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from ray_procs import short_temp_dir, stop_cluster, token_env

from tests.procs import free_port
from tests.s3_server import moto_server

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.extended]


BUCKET = "mlinfra-multinode"


@pytest.fixture(scope="module")
def s3():
    with moto_server() as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(scope="module")
def cluster(s3):
    temp_dir, token = short_temp_dir("mn"), secrets.token_hex(32)
    env = {**token_env(token), **s3.env()}
    helper = [sys.executable, str(ROOT / "tests/e2e/multinode_cluster.py"), temp_dir, str(free_port())]
    proc = subprocess.Popen(helper, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, "the multi-node cluster did not start"
        yield {**json.loads(line), "env": env, "headers": {"Authorization": f"Bearer {token}"}}
    finally:
        proc.stdin.close()  # the helper shuts the cluster down when its stdin closes
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        left = stop_cluster(temp_dir)
        assert not left, f"cluster processes still alive: {sorted(left)}"


@pytest.fixture(scope="module")
def run(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("multinode")
    cmd = [sys.executable, "jobs/pipeline.py", "debug=fast", f"ray.address={cluster['address']}",
           f"paths.root={root}", f"serve.port={free_port()}", "scaling=cpu_multi",
           "scaling.cpus_per_worker=1", "serve.predictor_replicas=2", f"paths.storage=s3://{BUCKET}/ray_results"]
    proc = subprocess.run(cmd, cwd=ROOT, env=cluster["env"], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    return {"root": root, "summary": json.loads((root / "summary.json").read_text()),
            "log": proc.stdout + proc.stderr}


def actor_nodes(cluster: dict, class_name: str) -> list[str]:
    """Node ids of every actor (alive or finished) of `class_name`, from the state API."""
    params = {"filter_keys": "class_name", "filter_predicates": "=", "filter_values": class_name,
              "limit": 1000}
    resp = httpx.get(f"{cluster['dashboard']}/api/v0/actors", params=params, headers=cluster["headers"],
                     timeout=60)
    resp.raise_for_status()
    return [a["node_id"] for a in resp.json()["data"]["result"]["result"]]


def test_ddp_workers_land_on_the_two_worker_nodes(cluster, run):
    nodes = actor_nodes(cluster, "RayTrainWorker")
    assert len(nodes) == 2 and set(nodes) == set(cluster["workers"]), (nodes, cluster)
    assert "2 workers x {'CPU': 1.0, 'cpu_worker': 1.0}" in run["log"]  # the plan, from config
    assert run["summary"]["train"]["epochs"] >= 1


def test_checkpoints_written_on_worker_nodes_land_in_s3(s3, run):
    prefix = f"ray_results/{run['summary']['train']['run_name']}/checkpoint_"
    listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    assert any(o["Key"].endswith("model.safetensors") for o in listed), [o["Key"] for o in listed]
    assert not (run["root"] / "ray_results").exists()


def test_predictor_replicas_span_nodes_and_serve_like_offline(cluster, run):
    nodes = actor_nodes(cluster, "ServeReplica:mlinfra:Predictor")
    assert len(nodes) == 2 and len(set(nodes)) == 2, nodes
    serve = run["summary"]["serve"]
    assert serve["served_matches_offline"] and serve["metrics_requests_total"] == serve["requests_sent"]
