"""Serve the registry alias (or a local bundle) with Ray Serve until interrupted.

Stages: compose config → start/join Ray → deploy Ingress + Predictor + DriftMonitor → wait for
/readyz → block until SIGINT/SIGTERM (own cluster) or return (joined cluster: the app stays up).

    python jobs/serve.py                                         # `champion` on 127.0.0.1:8000
    python jobs/serve.py serve.bundle_path=/path/to/bundle serve.port=8080 serve=autoscale
    MLINFRA_API_KEY=... python jobs/serve.py serve.auth.enabled=true
    ray job submit --working-dir . -- python jobs/serve.py ray=cluster paths.root=/shared/mlinfra
"""

import hydra
from omegaconf import DictConfig

from mlinfra_ray.compose import to_settings
from mlinfra_ray.serve.app import serve_forever


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> str:
    return serve_forever(to_settings(cfg))


if __name__ == "__main__":
    main()
