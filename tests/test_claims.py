"""The duplicate registry in shards (`ray_pipeline.claims`): a job's size sets how many; each content is
decided by one shard, so the registry's semantics hold however many there are, under concurrent claims.
Here the shards are registries in this process, answering as Ray actor handles do (the unit tier runs no
Ray); the Ray Data job uses real ones (tests/test_ingest.py counts its duplicates)."""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from ray_pipeline.records.shards import shard_of
from ray_pipeline.runs import claims as claims_module
from ray_pipeline.runs.claims import IDS_PER_SHARD, MAX_SHARDS, ShardedClaims, shard_count
from ray_pipeline.steps.journey import DuplicateRegistry

pytestmark = pytest.mark.unit


class LocalShard:
    """A DuplicateRegistry answering as a Ray actor handle does (`claim.remote`)."""

    def __init__(self):
        self.registry = DuplicateRegistry()
        self.claim = SimpleNamespace(remote=self.registry.claim)


def local_claims(shards: int) -> ShardedClaims:
    return ShardedClaims([LocalShard() for _ in range(shards)], get=lambda reply: reply)


def content(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def test_the_jobs_size_sets_the_shards():
    assert [shard_count(n) for n in (0, 1, IDS_PER_SHARD, IDS_PER_SHARD + 1, 10**8, 10**10)] == [1, 1, 1, 2, 50, MAX_SHARDS]


def test_every_content_is_decided_by_one_shard_and_they_share_the_work():
    ids = [content(n) for n in range(4000)]
    assert all(shard_of(i, 8) == shard_of(i, 8) for i in ids)
    counts = [sum(1 for i in ids if shard_of(i, 8) == shard) for shard in range(8)]
    assert min(counts) > 400  # about 500 each: SHA-256 prefixes spread evenly


def test_first_path_owns_copies_are_duplicates_and_a_path_keeps_its_claim():
    claims = local_claims(4)
    pairs = [(content(1), "/a.jpg"), (content(2), "/b.jpg"), (content(1), "/copy of a.jpg"), (content(3), "/c.jpg")]
    assert claims.claim(pairs) == [True, True, False, True]
    assert claims.claim([(content(1), "/a.jpg"), (content(1), "/copy of a.jpg")]) == [True, False]  # a retried batch


def test_a_long_claim_is_asked_in_rounds_and_answered_in_order(monkeypatch):
    """The driver claims every stored file of a job at once: in rounds of PAIRS_PER_CALL, with the copies
    of a content in other rounds still duplicates."""
    pairs = [(content(n % 7), f"/{n}.jpg") for n in range(40)]
    whole = local_claims(3).claim(pairs)
    monkeypatch.setattr(claims_module, "PAIRS_PER_CALL", 6)
    assert local_claims(3).claim(pairs) == whole == [n < 7 for n in range(40)]


def test_concurrent_claims_give_each_content_one_owner():
    """Eight threads claim 300 contents from 8 paths each, in random orders and batches, twice over:
    every content has exactly one owning path, and every answer a path got it keeps."""
    claims = local_claims(5)
    pairs = [(content(n), f"/folder{copy}/{n}.jpg") for n in range(300) for copy in range(8)]

    def claim_all(seed: int) -> dict[tuple[str, str], bool]:
        mine = pairs[:]
        random.Random(seed).shuffle(mine)
        answers: dict[tuple[str, str], bool] = {}
        for start in range(0, len(mine), 37):
            batch = mine[start : start + 37]
            answers.update(zip(batch, claims.claim(batch)))
        return answers

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(claim_all, range(16)))
    for pair in pairs:
        assert len({run[pair] for run in runs}) == 1, pair  # the same answer to every claim of one path
    owners = {}
    for (record_id, path), owns in runs[0].items():
        if owns:
            assert record_id not in owners, (record_id, owners[record_id], path)
            owners[record_id] = path
    assert len(owners) == 300
