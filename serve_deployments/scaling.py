"""Scaling of the app's warm deployments (the `Embedder`, `InlineIngest`); a `deployments:` entry in the
Serve config replaces it."""

from __future__ import annotations


def warm_scaling(min_replicas: int, max_replicas: int, target_ongoing_requests: int, gpu_fraction: float = 0.0) -> dict:
    """Between `min_replicas` (all started at once, so a request never waits for a model to load) and
    `max_replicas`, `gpu_fraction` of a GPU each. No CPU is reserved, as for the ingress: a replica works
    in short bursts, and the ingestion jobs beside it need every CPU that is free."""
    return {
        "autoscaling_config": {
            "min_replicas": min_replicas,
            "initial_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
            "upscale_delay_s": 5,
            "downscale_delay_s": 300,
        },
        "ray_actor_options": {"num_gpus": gpu_fraction, "num_cpus": 0},
    }
