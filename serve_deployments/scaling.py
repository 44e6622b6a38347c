"""Scaling of the app's deployments: the warm ones (the `Embedder`, `InlineIngest`), and those that scale to
zero (the `Captioner`, the `TextReader`, the `FaceFinder`); a `deployments:` entry in the Serve config replaces it."""

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


def to_zero_scaling(max_replicas: int, idle_seconds: float, gpu_fraction: float, target_ongoing_requests: int) -> dict:
    """Scale to zero: no replica (and no model in memory) while idle; the first request starts one. One CPU
    each: a replica works for as long as requests come."""
    return {
        "autoscaling_config": {
            "min_replicas": 0,
            "initial_replicas": 0,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
            "upscale_delay_s": 0,
            "downscale_delay_s": idle_seconds,
            "downscale_to_zero_delay_s": idle_seconds,
            "look_back_period_s": max(1.0, min(30.0, idle_seconds)),
        },
        "ray_actor_options": {"num_gpus": gpu_fraction, "num_cpus": 1},
    }
