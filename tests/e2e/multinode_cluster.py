"""A head plus two worker nodes on this machine (`ray.cluster_utils.Cluster`), run as its own process
by tests/e2e/test_multinode.py so the pytest process never holds Ray state.

Custom resources stand in for cluster.yaml's node types: the head advertises `head: 1`, each worker
`cpu_worker: 1`. Prints one JSON line (GCS address, dashboard URL, node ids by role), then keeps the
cluster up until stdin closes, and shuts it down.

    python tests/e2e/multinode_cluster.py <temp_dir> <dashboard_port>
"""

import json
import socket
import sys

import ray._private.utils as ray_utils
from ray.cluster_utils import Cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(temp_dir: str, dashboard_port: int) -> None:
    # Cluster() records its address in /tmp/ray/ray_current_cluster, where every plain ray.init() on
    # this machine would then find and join it (other test sessions included): keep it in temp_dir.
    write = ray_utils.write_ray_address
    ray_utils.write_ray_address = lambda address, _=None: write(address, temp_dir)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"head": 1}, "temp_dir": temp_dir, "include_dashboard": True,
        "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
        "dashboard_agent_listen_port": free_port()})  # not the fixed 52365 another cluster may hold
    try:
        workers = [cluster.add_node(num_cpus=1, resources={"cpu_worker": 1}) for _ in range(2)]
        cluster.wait_for_nodes()
        print(json.dumps({"address": cluster.address, "dashboard": f"http://127.0.0.1:{dashboard_port}",
                          "head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}),
              flush=True)
        sys.stdin.read()  # the test closes stdin when it is done
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
