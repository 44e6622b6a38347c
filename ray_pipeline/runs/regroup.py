"""Regroup: every face of a collection grouped into people again (`python -m ray_pipeline people regroup`), the
graph of near faces made by Ray tasks for a large collection (`steps.grouping`), the groups written by the store
(`records.people`: a named person is never split or merged, a face placed by hand never moved)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from ray_pipeline.cluster.runtime import init_ray
from ray_pipeline.records.errors import MissingCollection
from ray_pipeline.records.store import RecordStore, opened_here
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.steps.grouping import Edge, edges_of_rows, group_faces

logger = logging.getLogger(__name__)

IN_PROCESS_MAX = 20_000  # faces whose graph this process makes (under 10 s here); more, by Ray tasks


def edges_on_ray(vectors: np.ndarray, blocks: list[tuple[int, int]]) -> Iterator[Edge]:
    """The graph's edges, a Ray task per block of rows, the descriptors put in the object store once."""
    import ray

    logger.info("%d faces: their graph made by Ray tasks on %s", len(vectors), init_ray())
    task = ray.remote(edges_of_rows).options(num_cpus=1)
    shared = ray.put(vectors)
    pending = [task.remote(shared, start, stop) for start, stop in blocks]
    for reply in pending:
        yield from ray.get(reply)


def regroup(store: RecordStore, in_process_max: int = IN_PROCESS_MAX) -> dict:
    """Group the collection's faces again; the summary: faces, people before and after, where, seconds."""
    started = time.monotonic()
    faces = store.all_faces()
    before = len(store.people())
    on_ray = len(faces.ids) > in_process_max
    logger.info("grouping %d faces", len(faces.ids))
    groups = group_faces(faces.vectors, edges_on_ray if on_ray else None)
    grouped = time.monotonic()
    store.apply_groups(dict(zip(faces.ids, groups)))
    people = store.people()
    return {"collection": store.target.collection, "faces": len(faces.ids), "people_before": before,
            "people": len(people), "named": sum(person.name is not None for person in people),
            "grouped_by": "ray tasks" if on_ray else "this process", "grouping_seconds": round(grouped - started, 1),
            "seconds": round(time.monotonic() - started, 1)}


def run_regroup(target: StoreTarget, in_process_max: int = IN_PROCESS_MAX) -> dict:
    """`regroup` of the collection, opened by this process."""
    with opened_here(target) as store:
        if store is None:
            raise MissingCollection(f"no collection {target.collection!r} in {target.describe()}: ingest it first")
        return regroup(store, in_process_max)
