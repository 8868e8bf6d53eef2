#!/usr/bin/env bash
# Set-up of every node of cluster.yaml: OS packages, the shared filesystem, and this package
# installed the way the README does it (`make install`: a venv from the pinned pyproject.toml).
#   cluster/node_setup.sh head|cpu_worker|gpu_worker
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
# shellcheck source=cluster.env
source "${MLINFRA_CLUSTER_ENV:-$HERE/cluster.env}"
role="${1:?usage: $0 head|cpu_worker|gpu_worker}"

if [[ "$MLINFRA_NFS" == REPLACE-ME* ]]; then
  echo "cluster/cluster.env: set MLINFRA_NFS to the shared filesystem every node mounts" >&2; exit 1
fi
if [[ "$role" == gpu_worker ]] && ! nvidia-smi -L; then
  echo "gpu_worker needs an image with the NVIDIA driver (see the gpu_worker ImageId in cluster.yaml)" >&2; exit 1
fi

packages=(python3.11 python3.11-venv make nfs-common)
[[ "$role" == head ]] && packages+=(redis-server prometheus)
sudo apt-get update -qq
sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
if [[ "$role" == head ]]; then
  # Debian starts both on their default ports and addresses; head_services.sh runs them as configured.
  sudo systemctl disable --now redis-server prometheus
fi

sudo mkdir -p "$MLINFRA_HOME"
mountpoint -q "$MLINFRA_HOME" || sudo mount -t nfs4 \
  -o nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport "$MLINFRA_NFS" "$MLINFRA_HOME"
sudo chown "$(id -u):$(id -g)" "$MLINFRA_HOME"

make -C "$REPO" install PYTHON=python3.11

# Login shells (ray start, ray exec, and so the job drivers Ray starts) get the venv, token auth and
# the shared root. The token itself is ~/.ray/auth_token, copied by cluster.yaml's file_mounts.
line="export PATH=$REPO/.venv/bin:\$PATH RAY_AUTH_MODE=token MLINFRA_HOME=$MLINFRA_HOME"
grep -qxF "$line" ~/.bashrc || echo "$line" >> ~/.bashrc
