"""Grouping faces into people: a graph joining each face to its nearest faces within `SAME_PERSON`, cut into groups
by Chinese whispers (dlib's, in C++; King's choice for these very descriptors, and it needs no count of people).

The graph is the costly part, a pass over every pair of faces: it is made a block of rows at a time
(`edges_of_rows`), by Ray tasks on a cluster (`runs.regroup`), in this process otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from ray_pipeline.model.faces import SAME_PERSON

BLOCK = 1024  # rows of the distance matrix at a time: BLOCK x faces float32 (400 MB at 10^5 faces)
NEIGHBOURS = 24  # edges kept per face, the nearest: more only slow the whispers, not change the groups

Edge = tuple[int, int, float]  # two faces' rows, and the edge's weight (nearer: heavier)


def edges_of_rows(vectors: np.ndarray, start: int, stop: int, threshold: float = SAME_PERSON,
                  neighbours: int = NEIGHBOURS) -> list[Edge]:
    """The edges from faces start..stop to their nearest faces within `threshold` (euclidean), at most
    `neighbours` each, as (lower row, higher row, weight)."""
    rows = vectors[start:stop]
    squared = (np.einsum("ij,ij->i", rows, rows)[:, None] + np.einsum("ij,ij->i", vectors, vectors)[None, :]
               - 2.0 * rows @ vectors.T)
    squared[np.arange(stop - start), np.arange(start, stop)] = np.inf  # not to itself
    near_rows, near_faces = np.nonzero(squared <= threshold * threshold)
    near_squared = squared[near_rows, near_faces]
    order = np.lexsort((near_squared, near_rows))  # by row, nearest first
    near_rows, near_faces, near_squared = near_rows[order], near_faces[order], near_squared[order]
    first_of_row = np.searchsorted(near_rows, near_rows)  # where each row's run starts
    kept = np.arange(len(near_rows)) - first_of_row < neighbours  # each row's nearest `neighbours`
    near_rows, near_faces = near_rows[kept], near_faces[kept]
    distances = np.sqrt(np.maximum(near_squared[kept], 0.0))
    faces = near_rows + start
    return [(int(min(a, b)), int(max(a, b)), float(1.0 - d / threshold))
            for a, b, d in zip(faces, near_faces, distances)]


def row_blocks(faces: int, block: int = BLOCK) -> list[tuple[int, int]]:
    return [(start, min(faces, start + block)) for start in range(0, faces, block)]


def groups_of(faces: int, edges: Iterable[Edge]) -> list[int]:
    """Each face's group (Chinese whispers on the graph); a face with no edge is a group of its own."""
    import dlib

    joined = {(a, b): weight for a, b, weight in edges}  # an edge found from both ends once
    graph = [(face, face, 0.0) for face in range(faces)]  # every face a vertex, joined or not
    graph += [(a, b, weight) for (a, b), weight in joined.items()]
    return list(dlib.chinese_whispers(graph)) if faces else []


def group_faces(vectors: np.ndarray, edges_by_blocks: Callable[[np.ndarray, list[tuple[int, int]]], Iterable[Edge]]
                | None = None) -> list[int]:
    """Each face's group; `edges_by_blocks` makes the graph's edges of the row blocks (by default here)."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    blocks = row_blocks(len(vectors))
    if edges_by_blocks is None:
        edges: Iterable[Edge] = [edge for start, stop in blocks for edge in edges_of_rows(vectors, start, stop)]
    else:
        edges = edges_by_blocks(vectors, blocks)
    return groups_of(len(vectors), edges)
