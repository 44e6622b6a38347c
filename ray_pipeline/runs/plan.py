"""The actor plan of an ingestion: how the CPUs free are shared between decoding and embedding. No Ray
here, so that the cost model (benchmarks/cost_model.py) follows the very plan the pipeline runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

LIGHT_TASK_RESERVE = 0.5  # CPUs the actors leave free for light tasks (config.LIGHT_TASK_CPUS: the writes to Chroma)


@dataclass(frozen=True)
class ActorPlan:
    """How many actors of each stage, and what each holds; the job summary records it."""

    embed_actors: tuple[int, int]  # the embedding pool's bounds
    embed_cpus: float  # CPUs each embedding actor holds
    embed_threads: int  # torch threads of a CPU embedding actor
    decode_actors: int
    decode_cpus: float  # CPUs each decode actor holds


def plan_actors(device: str, actors: tuple[int, int] | None, free_cpus: float, gpus: int) -> ActorPlan:
    """How the CPUs free now are shared: a reserve for light tasks, the rest between embedding and decoding.

    Planned from what is free, not the cluster's total, so a Serve app or another job holding CPUs
    does not leave an actor waiting forever for a CPU it can never get.
    """
    budget = max(free_cpus - LIGHT_TASK_RESERVE, 0.5)
    embed_cpus: float
    if device == "cuda":
        low, high = actors or (1, max(1, gpus))
        # A whole CPU feeds each GPU where there is one to spare; on a node short of CPUs, a share of one,
        # so that decoding still gets one and no actor waits for a CPU that is not there.
        embed_cpus = 1 if budget - high >= 0.25 else max(0.25, budget / 2 / high)
    else:
        low, high = actors or (1, 1)
        share = budget / 2 / high  # CPU inference and decoding split what is free
        embed_cpus = int(share) if share >= 1 else max(0.25, share)
    decode_capacity = budget - high * embed_cpus
    return ActorPlan(
        embed_actors=(low, high),
        embed_cpus=embed_cpus,
        # Torch threads of a CPU embedding actor: its whole CPUs; on a small machine, where it holds a
        # fraction of one, every CPU the job may use, since decoding leaves them idle between batches.
        embed_threads=max(1, int(embed_cpus)) if embed_cpus >= 1 else max(1, math.ceil(budget)),
        # On a small machine one decode actor takes a fraction of a CPU rather than starve the rest.
        decode_actors=max(1, int(decode_capacity)),
        decode_cpus=1 if decode_capacity >= 1 else max(0.25, decode_capacity),
    )
