"""A collection sharded over several Chroma stores, without Ray: each shard a real embedded Chroma (its own
folder and client, handed to the store as a server's client would be). Records are routed by id, each to
one shard and spread evenly; a search merges the shards' nearest into what one store holding them all
answers; failures are routed like records; a list of servers in another order or of another length is
refused, and nothing is written."""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest

from ray_pipeline.files.state import FileState
from ray_pipeline.model.faces import Face, FacesFound
from ray_pipeline.records.chroma import ChromaStore
from ray_pipeline.records.errors import MissingCollection, StoreError
from ray_pipeline.records.failures import Failure
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.shards import shard_of
from ray_pipeline.records.store import open_store
from ray_pipeline.records.target import ShardPlace, StoreTarget
from ray_pipeline.search.query import top_k

pytestmark = pytest.mark.unit

MODEL = {"model": "tiny-clip", "weights": "test"}
URLS = ["http://shard-a:8000", "http://shard-b:8000", "http://shard-c:8000", "http://shard-d:8000"]


@pytest.fixture
def servers(tmp_path):
    """Four Chroma stores, by the URL they stand for."""
    import chromadb
    from chromadb.config import Settings

    clients = {url: chromadb.PersistentClient(path=str(tmp_path / url[-12:-5]), settings=Settings(anonymized_telemetry=False))
               for url in URLS}
    yield clients
    for client in clients.values():
        client.close()


def opened(servers, urls: list[str], model: dict | None = MODEL):
    """The collection over these servers, in this order (with `model`: for writing)."""
    return open_store(StoreTarget("photos", url=",".join(urls)), model, client=[servers[url] for url in urls])


def stored(servers, url: str) -> set[str]:
    """The ids one server holds."""
    try:
        return set(servers[url].get_collection("photos").get(include=[])["ids"])
    except Exception:
        return set()


def records(count: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(seed)
    ids = [hashlib.sha256(f"photo {seed} {i}".encode()).hexdigest() for i in range(count)]
    vectors = rng.normal(size=(count, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    metadatas = [{"path": f"/photos/{i:03d}.jpg", "file_size": 1000 + i, "mtime_ns": i, "even": i % 2 == 0} for i in range(count)]
    return ids, vectors, metadatas


def test_the_list_of_servers():
    assert StoreTarget("c", url="http://a:8000").urls == ("http://a:8000",)
    assert not StoreTarget("c", url="http://a:8000").sharded
    target = StoreTarget("c", url="http://a:8000, http://b:8000")
    assert target.sharded and target.urls == ("http://a:8000", "http://b:8000")
    assert [shard.url for shard in target.shards()] == ["http://a:8000", "http://b:8000"]
    assert target.cli_args() == ["--collection", "c", "--chroma-url", "http://a:8000, http://b:8000"]
    with pytest.raises(StoreError, match="'http://a:8000,,http://b:8000': an empty URL"):
        StoreTarget("c", url="http://a:8000,,http://b:8000").urls
    for twice in ("http://a:8000,http://a:8000", "a:8000,http://A:8000/", "http://a,b:8000,a:8000"):
        with pytest.raises(StoreError, match="a server named twice"):
            StoreTarget("c", url=twice).urls
    assert StoreTarget("c", url="a:8000,a:8001").sharded  # two servers on one host


def test_each_record_on_exactly_one_shard_spread_evenly(servers):
    store = opened(servers, URLS[:3])
    ids, vectors, metadatas = records(300)
    store.upsert(ids, vectors, metadatas)
    store.upsert(ids[:50], vectors[:50], metadatas[:50])  # again: still one record each
    held = [stored(servers, url) for url in URLS[:3]]
    assert all(i in held[shard_of(i, 3)] for i in ids)
    assert sum(map(len, held)) == store.count() == 300 and set().union(*held) == set(ids)
    assert all(70 <= len(h) <= 130 for h in held), [len(h) for h in held]  # 100 each, give or take

    assert set(store.records(ids[:20] + ["0" * 64])) == set(ids[:20])  # by id: from the one shard that holds it
    assert set(store.records_at(["/photos/007.jpg", "/photos/123.jpg"])) == {ids[7], ids[123]}  # by path: all
    assert set(store.matching({"even": True}, None)) == set(ids[::2])
    got_ids, got_vectors, got_metadatas = store.vectors()
    order = [got_ids.index(i) for i in ids]
    assert np.allclose(got_vectors[order], vectors, atol=1e-6) and got_metadatas[order[5]]["path"] == "/photos/005.jpg"

    store.merge_metadata({ids[1]: {"even": True}})
    store.add_paths({ids[2]: ["/copies/002.jpg"]})
    store.enrich({ids[3]: {"caption": "a cat"}, ids[4]: {"caption": "a dog"}})
    assert store.records([ids[1]])[ids[1]]["even"] is True
    assert store.records([ids[2]])[ids[2]]["paths"] == ["/copies/002.jpg", "/photos/002.jpg"]
    assert set(store.lacking("caption", ids[:6])) == set(ids[:6]) - set(ids[3:5])
    assert store.records([ids[3]])[ids[3]]["has_caption"] is True  # the keys derived from it too
    store.delete(ids[:100])
    assert store.count() == 200 and not store.records(ids[:100])


def test_a_search_merges_the_shards_nearest(servers, tmp_path):
    """The k nearest over three shards, best first, are those one store holding every record gives."""
    sharded = opened(servers, URLS[:3])
    whole = ChromaStore(StoreTarget("photos", path=str(tmp_path / "whole")), MODEL)
    ids, vectors, metadatas = records(120, seed=1)
    for store in (sharded, whole):
        store.upsert(ids, vectors, metadatas)
    for query, where in ((vectors[17], None), (vectors[40] + vectors[41], None), (vectors[3], {"even": False})):
        merged, single = sharded.query(query, 10, where), whole.query(query, 10, where)
        assert merged["ids"] == single["ids"]
        assert np.allclose(merged["distances"], single["distances"], atol=1e-5)
        assert merged["distances"][0] == sorted(merged["distances"][0])
        assert [m["path"] for m in merged["metadatas"][0]] == [m["path"] for m in single["metadatas"][0]]
    assert sharded.query(vectors[17], 1)["ids"] == [[ids[17]]]
    assert sorted(sharded.query(vectors[0], 500)["ids"][0]) == sorted(ids)  # more than a shard holds: all of them
    page = top_k(sharded, vectors[40], 3, SearchFilters(), collapse=False)  # search's own use of it
    assert page.results[0]["id"] == ids[40] and page.total == 120


def test_failures_are_routed_like_records(servers):
    store = opened(servers, URLS[:3])
    states = {f"/photos/bad-{i}.jpg": FileState(i, i, i) for i in range(12)}
    store.remember_failures([Failure(path, state, "not an image") for path, state in states.items()], [])
    assert store.failed_before(states) == dict.fromkeys(states, "not an image")
    store.remember_failures([], ["/photos/bad-0.jpg"])
    assert "/photos/bad-0.jpg" not in store.failed_before(states)
    held = [len(servers[url].get_collection("photos--failed-files").get(include=[])["ids"]) for url in URLS[:3]]
    assert sum(held) == 11 and min(held) > 0


def test_the_people_of_a_sharded_collection_live_beside_its_first_shard(servers):
    """Faces of photos on every shard join one set of people (beside the first shard); a photo's `people` is on its
    own shard, so the `person` filter finds it there; deleting a photo on any shard takes its faces."""
    store = opened(servers, URLS[:3])
    ids, vectors, metadatas = records(12)
    store.upsert(ids, vectors, metadatas)
    face = np.zeros(128, np.float32)
    face[0] = 1.0
    store.store_faces({record_id: FacesFound([Face((0.1, 0.1, 0.4, 0.4), 1.0, face)]) for record_id in ids[:6]})
    (person,) = store.people()
    assert person.faces == 6 and {shard_of(record_id, 3) for record_id in ids[:6]} == {0, 1, 2}
    assert len(servers[URLS[0]].get_collection("photos--faces").get(include=[])["ids"]) == 6
    assert all(not any(c.name.endswith("--faces") for c in servers[url].list_collections()) for url in URLS[1:3])
    store.name_person(person.id, "Ana")
    found = store.matching(SearchFilters(person=[person.id]).where(), None)
    assert set(found) == set(ids[:6]) and all(found[i]["faces"] == 1 for i in ids[:6])
    store.delete([record_id for record_id in ids[:6] if shard_of(record_id, 3) != 0])
    assert store.people()[0].faces == sum(shard_of(record_id, 3) == 0 for record_id in ids[:6])


def test_a_path_on_two_shards_is_not_taken_as_unchanged(servers):
    """A file edited in place with its mtime put back has two records, which may lie on two shards: only
    reading it tells which is its content."""
    store = opened(servers, URLS[:2])
    first = next(i for i in (hashlib.sha256(bytes([n])).hexdigest() for n in range(99)) if shard_of(i, 2) == 0)
    second = next(i for i in (hashlib.sha256(bytes([n])).hexdigest() for n in range(99)) if shard_of(i, 2) == 1)
    same = {"path": "/photos/a.jpg", "file_size": 10, "mtime_ns": 5}
    store.upsert([first], np.ones((1, 8), np.float32), [same])
    assert store.unchanged([("/photos/a.jpg", 10, 5)]) == {"/photos/a.jpg": first}
    store.upsert([second], np.ones((1, 8), np.float32), [same])
    assert store.unchanged([("/photos/a.jpg", 10, 5)]) == {}


def test_another_list_of_servers_is_refused_and_nothing_written(servers):
    store = opened(servers, URLS[:3])
    ids, vectors, metadatas = records(30)
    store.upsert(ids, vectors, metadatas)
    assert store.metadata["shards"] == 3 and "shard" not in store.metadata
    before = [stored(servers, url) for url in URLS]

    reordered = [URLS[1], URLS[0], URLS[2]]
    for model in (MODEL, None):  # writing or reading
        with pytest.raises(StoreError, match=f"'photos' on Chroma server {URLS[1]} is shard 1 of 3 .* make it shard 0 of 3"):
            opened(servers, reordered, model)
        with pytest.raises(StoreError, match=f"on Chroma server {URLS[0]} is shard 0 of 3 .* make it shard 0 of 2"):
            opened(servers, URLS[:2], model)
    with pytest.raises(StoreError, match=f"on Chroma server {URLS[0]} is shard 0 of 3 .* make it shard 0 of 4"):
        opened(servers, URLS, MODEL)  # a server added
    with pytest.raises(StoreError, match=f"holds records on {URLS[0]}, {URLS[2]} but is missing on {URLS[3]}: give"):
        opened(servers, [URLS[0], URLS[3], URLS[2]], MODEL)  # a server mistyped
    with pytest.raises(StoreError, match=r"is shard 0 of 3 \(counting from 0\), but the servers given make it not sharded"):
        ChromaStore(StoreTarget("photos", url=URLS[0]), MODEL, client=servers[URLS[0]])  # one of its servers alone
    assert [stored(servers, url) for url in URLS] == before
    assert "photos" not in [c.name for c in servers[URLS[3]].list_collections()]

    with pytest.raises(StoreError, match="holds vectors from model tiny-clip .* this run uses other"):
        opened(servers, URLS[:3], {"model": "other", "weights": "test"})
    assert opened(servers, URLS[:3], None).count() == 30  # the right list still opens it


def test_a_collection_created_halfway_is_finished_and_an_unsharded_one_kept_apart(servers):
    """A first ingestion that stopped after creating some shards (no records yet) creates the rest; a
    search finds no collection until then. A collection on one server is not a shard of a list of them."""
    ChromaStore(StoreTarget("photos", url=URLS[0]), MODEL, client=servers[URLS[0]], place=ShardPlace(0, 2))
    with pytest.raises(MissingCollection, match=f"no collection 'photos' on {URLS[1]}"):
        opened(servers, URLS[:2], None)
    assert opened(servers, URLS[:2]).count() == 0
    assert opened(servers, URLS[:2]).query(np.ones(8, np.float32), 5)["ids"] == [[]]  # empty shards answer nothing
    assert opened(servers, URLS[:2], None).metadata["shards"] == 2

    ChromaStore(StoreTarget("single", url=URLS[2]), MODEL, client=servers[URLS[2]])
    with pytest.raises(StoreError, match="'single' on Chroma server .* is not sharded \\(one server\\), but the servers given "
                                         "make it shard 0 of 2"):
        open_store(StoreTarget("single", url=f"{URLS[2]},{URLS[3]}"), MODEL, client=[servers[URLS[2]], servers[URLS[3]]])


def test_a_server_that_does_not_answer_is_named(monkeypatch):
    """Opening retries as for one server (the backoff shortened here), then names the one that failed."""
    from ray_pipeline.records import connection
    from ray_pipeline.records.owner import StoreHandle

    monkeypatch.setattr(connection, "FIRST_BACKOFF_S", 0.01)
    with socket.socket() as taken:  # a port where nothing listens
        taken.bind(("127.0.0.1", 0))
        silent = f"http://127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(StoreError, match=f"one of the Chroma servers {silent},http://127.0.0.1:9 is unreachable: gave up "
                                             f"after 6 attempts \\(Chroma server {silent} is unreachable"):
            StoreHandle(StoreTarget("photos", url=f"{silent},http://127.0.0.1:9")).store.count()
