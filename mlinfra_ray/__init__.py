"""mlinfra_ray: ML infrastructure on Ray."""
