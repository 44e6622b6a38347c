"""A head and two worker nodes (one advertising a GPU) on `ray.cluster_utils.Cluster`: decoding
spreads over the nodes, the embedding actors go where the GPU is (running on the CPU here, as no
CUDA device exists), and the records equal a single-node run's. The workers also write one collection
sharded over three Chroma servers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ChromaServer, free_port, run_cli, summary_of

from samples.sample_photos import write_library, write_many


@pytest.fixture(scope="module")
def three_nodes():
    from ray.cluster_utils import Cluster

    dashboard_port = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_port": dashboard_port, "dashboard_host": "127.0.0.1"})
    cluster.add_node(num_cpus=2)
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    yield {"address": cluster.address, "dashboard": f"http://127.0.0.1:{dashboard_port}", "gpu_node": gpu_node.node_id}
    cluster.shutdown()


def records(chroma_path, collection):
    import chromadb

    got = chromadb.PersistentClient(path=str(chroma_path)).get_collection(collection).get(include=["embeddings"])
    return dict(zip(got["ids"], np.asarray(got["embeddings"])))


def test_decoding_spreads_and_embedding_follows_the_gpu(three_nodes, cli, tmp_path, tiny_model_args):
    library = tmp_path / "photos"
    write_library(str(library))
    write_many(str(library / "crops"), 40)
    spread = run_cli(["ingest", str(library), "--collection", "spread", "--chroma-path", str(tmp_path / "multi"),
                      "--inline-max-files", "0", *tiny_model_args],  # a Ray Data job, however few the files
                     env={"RAY_ADDRESS": three_nodes["address"]})
    assert summary_of(spread)["embedded"] == 46
    assert "no CUDA device visible to this actor" in spread.stderr  # it asked for the GPU node's GPU

    from ray.util.state import list_actors

    actors = list_actors(address=three_nodes["dashboard"], detail=True, limit=1000)
    decode_nodes = {a.node_id for a in actors if "PrepareStage" in (a.class_name or "")}
    embed_nodes = {a.node_id for a in actors if "EmbedStage" in (a.class_name or "")}
    assert len(decode_nodes) >= 2
    assert embed_nodes == {three_nodes["gpu_node"]}

    single = summary_of(cli("ingest", str(library), "--collection", "single", "--chroma-path", str(tmp_path / "one"), *tiny_model_args))
    assert single["embedded"] == 46
    on_three, on_one = records(tmp_path / "multi", "spread"), records(tmp_path / "one", "single")
    assert set(on_three) == set(on_one)
    assert min(float(on_three[i] @ on_one[i]) for i in on_one) > 0.9999


def ids_on(server: ChromaServer, collection: str) -> set[str]:
    import chromadb

    return set(chromadb.HttpClient(host="127.0.0.1", port=server.port).get_collection(collection).get(include=[])["ids"])


def test_a_collection_sharded_over_three_chroma_servers(three_nodes, tmp_path, tiny_model_args):
    """Every photo is stored once, on one of the three servers, by the cluster's workers; a re-run embeds
    nothing; a search merges the servers' nearest; a list of the servers in another order or of another
    length is refused before anything is written."""
    from ray_pipeline.records.collections import collections_at
    from ray_pipeline.records.target import StoreTarget

    library = tmp_path / "photos"
    write_library(str(library))
    servers = [ChromaServer(tmp_path / f"chroma-{i}").start() for i in range(3)]
    try:
        urls = [server.url for server in servers]
        env = {"RAY_ADDRESS": three_nodes["address"]}

        def ingest(servers_given: list[str]):
            return run_cli(["ingest", str(library), "--collection", "sharded", "--chroma-url", ",".join(servers_given),
                            *tiny_model_args], env=env)

        first = summary_of(ingest(urls))
        assert first["embedded"] == 6 and "actors" in first  # written by a Ray Data job's workers
        held = [ids_on(server, "sharded") for server in servers]
        assert sum(map(len, held)) == len(set().union(*held)) == 6 and all(held)  # each photo once, on one server
        again = summary_of(ingest(urls))
        assert (again["embedded"], again["skipped_existing"]) == (0, 6)
        assert [entry["count"] for entry in collections_at(StoreTarget("", url=",".join(urls)))] == [6]

        found = run_cli(["search", "--image", str(library / "coffee.png"), "--collection", "sharded", "--chroma-url",
                         ",".join(urls), "-k", "6", "--all", "--json"])
        assert found.returncode == 0, found.stderr
        results = json.loads(found.stdout)["results"]
        assert results[0]["path"] == str(library / "coffee.png") and results[0]["score"] > 0.999
        assert {r["id"] for r in results} == set().union(*held)  # from all three servers, best first
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)

        write_many(str(library / "new"), 2)
        for wrong, why in ((urls[::-1], f"on Chroma server {urls[2]} is shard 2 of 3 (counting from 0), but the servers "
                                        "given make it shard 0 of 3"),
                           (urls[:2], f"on Chroma server {urls[0]} is shard 0 of 3 (counting from 0), but the servers "
                                      "given make it shard 0 of 2")):
            refused = ingest(wrong)
            assert refused.returncode == 2 and why in refused.stderr, refused.stderr[-2000:]
        assert [ids_on(server, "sharded") for server in servers] == held
    finally:
        for server in servers:
            server.stop()
