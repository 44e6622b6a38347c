"""Similar: the groups of photos a library holds more than once. Exact copies (one content at several
paths: a record's `paths`) are kept apart from near-duplicates (records whose vectors have a cosine of
at least the threshold: re-encodes, resizes, small crops and edits, bursts).

The pairs come from matrix products over the collection's vectors, one pair of blocks at a time, so
memory stays bounded by the block size: in this process for a small collection, else as Ray tasks
that spread over the cluster (on a GPU where the cluster has one).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ray_pipeline.cluster.runtime import init_ray
from ray_pipeline.core import record_keys as keys
from ray_pipeline.records.store import RecordStore
from ray_pipeline.steps.summary import last_json_line

# A starting value for ViT-B-32 with trained weights, not calibrated here (no trained weights can be had
# on these machines): the README ("Similar photos") says how to calibrate it for a model.
DEFAULT_THRESHOLD = 0.95
BLOCK = 4096  # vectors a block: one product of two blocks is 64 MB of float32
IN_PROCESS_MAX = 20_000  # vectors compared in this process; more, as Ray tasks (starting a local Ray if none runs)
# The strongest pairs kept at most: past it the answer says `truncated` (a threshold set too low, or a library of
# bursts, would otherwise make an answer of millions of pairs).
MAX_PAIRS = 100_000

logger = logging.getLogger(__name__)
Pair = tuple[int, int, float]  # (row, row, cosine), the first row the smaller
Found = tuple[list[Pair], int]  # the strongest pairs kept, and how many there were at or above the threshold


@dataclass(frozen=True)
class Member:
    id: str
    path: str | None
    paths: list[str]


@dataclass(frozen=True)
class Group:
    """Near-duplicates: the records, and the cosine of every pair of them at or above the threshold."""

    members: list[Member]
    scores: list[tuple[str, str, float]]

    def as_json(self) -> dict:
        return {"members": [vars(member) for member in self.members],
                "scores": [{"a": a, "b": b, "score": score} for a, b, score in self.scores]}


@dataclass(frozen=True)
class Similar:
    threshold: float
    exact: list[Member]  # one content each, at every path that holds it
    near: list[Group]
    truncated: bool = False  # more pairs were at or above the threshold than were kept: the strongest only

    def as_json(self) -> dict:
        """What `similar --json` prints, its first key `threshold` (found again in a job's log by `similar_in`)."""
        return {"threshold": self.threshold, "exact": [vars(member) for member in self.exact],
                "near": [group.as_json() for group in self.near], "truncated": self.truncated}


def similar_in(output: str) -> dict | None:
    """The last `similar --json` document in a command's output or a Ray job's log; None when there is none."""
    return last_json_line(output, '{"threshold"')


def block_pairs(vectors: np.ndarray, rows: tuple[int, int], columns: tuple[int, int], threshold: float,
                most: int = MAX_PAIRS) -> Found:
    """The pairs at or above the threshold between two blocks of unit vectors (each pair once): the `most`
    strongest of them, and how many there were. Memory stays that of the block's product."""
    scores = _products(vectors[rows[0] : rows[1]], vectors[columns[0] : columns[1]])
    above = scores >= threshold
    if rows[0] == columns[0]:  # a block against itself: each pair once, never a vector with itself
        above &= np.triu(np.ones_like(above), k=1)
    flat = np.flatnonzero(above)
    count = len(flat)
    if count > most:
        flat = flat[np.argpartition(scores.ravel()[flat], count - most)[count - most :]]
    width = scores.shape[1]
    return [(rows[0] + int(at) // width, columns[0] + int(at) % width, round(float(scores.flat[at]), 6)) for at in flat], count


def strongest(parts: Iterable[Found], most: int = MAX_PAIRS) -> Found:
    """The `most` strongest pairs of all the parts, and how many there were in all."""
    kept: list[tuple[float, int, int]] = []
    count = 0
    for pairs, found in parts:
        count += found
        for i, j, score in pairs:
            if len(kept) < most:
                heapq.heappush(kept, (score, i, j))
            elif score > kept[0][0]:
                heapq.heapreplace(kept, (score, i, j))
    return [(i, j, score) for score, i, j in sorted(kept, reverse=True)], count


def _products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b.T, on the GPU where torch sees one."""
    import torch

    if not torch.cuda.is_available():
        return a @ b.T
    with torch.inference_mode():
        return (torch.from_numpy(a).cuda() @ torch.from_numpy(b).cuda().T).cpu().numpy()


def block_ranges(count: int, block: int | None = None) -> Iterator[tuple[tuple[int, int], tuple[int, int]]]:
    """Every pair of blocks (rows, columns) with columns at or after rows: each pair of vectors once."""
    block = block or BLOCK
    starts = range(0, count, block)
    for i in starts:
        for j in starts:
            if j >= i:
                yield (i, min(i + block, count)), (j, min(j + block, count))


def pairs_here(vectors: np.ndarray, threshold: float, most: int = MAX_PAIRS) -> Found:
    return strongest((block_pairs(vectors, rows, columns, threshold, most) for rows, columns in block_ranges(len(vectors))),
                     most)


def pairs_on_ray(vectors: np.ndarray, threshold: float, most: int = MAX_PAIRS) -> Found:
    """The same blocks as Ray tasks, the vectors put in the object store once."""
    import ray

    logger.info("%d vectors: their pairs found by Ray tasks on %s", len(vectors), init_ray())
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(block_pairs).options(num_cpus=1, num_gpus=gpus)
    shared = ray.put(vectors)
    pending = [task.remote(shared, rows, columns, threshold, most) for rows, columns in block_ranges(len(vectors))]
    return strongest((ray.get(reply) for reply in pending), most)


def groups_of(ids: list[str], metadatas: list[dict], pairs: list[Pair]) -> list[Group]:
    """Connected records (a chain of pairs) as groups, largest first."""
    parent = list(range(len(ids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in sorted({i for pair in pairs for i in pair[:2]}):
        members.setdefault(root(i), []).append(i)
    scores: dict[int, list[tuple[str, str, float]]] = {}
    for i, j, score in sorted(pairs, key=lambda pair: -pair[2]):
        scores.setdefault(root(i), []).append((ids[i], ids[j], score))
    groups = [Group([_member(ids[i], metadatas[i]) for i in rows], scores[top]) for top, rows in members.items()]
    return sorted(groups, key=lambda group: (-len(group.members), group.members[0].path or ""))


def _member(record_id: str, metadata: dict) -> Member:
    return Member(record_id, metadata.get(keys.PATH), keys.paths_of(metadata))


def find_similar(store: RecordStore, threshold: float = DEFAULT_THRESHOLD, in_process_max: int = IN_PROCESS_MAX,
                 most: int = MAX_PAIRS, pairs: Callable[[np.ndarray, float, int], Found] | None = None) -> Similar:
    """The collection's exact copies and near-duplicate groups, from at most the `most` strongest pairs;
    `pairs` finds them (by default in this process for at most `in_process_max` vectors, else with Ray tasks)."""
    ids, vectors, metadatas = store.vectors()
    if pairs is None:
        pairs = pairs_here if len(ids) <= in_process_max else pairs_on_ray
    exact = [_member(i, m) for i, m in zip(ids, metadatas) if len(keys.paths_of(m)) > 1]
    kept, count = pairs(vectors, threshold, most)
    if count > len(kept):
        logger.warning("%d pairs at cosine >= %s: the %d strongest are kept", count, threshold, len(kept))
    return Similar(threshold, sorted(exact, key=lambda member: member.path or ""), groups_of(ids, metadatas, kept),
                   truncated=count > len(kept))
