"""A head and two worker nodes (one advertising a GPU) on `ray.cluster_utils.Cluster`: decoding
spreads over the nodes, the embedding actors go where the GPU is (running on the CPU here, as no
CUDA device exists), and the records equal a single-node run's."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import free_port, run_cli, summary_of

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
    spread = run_cli(["ingest", str(library), "--collection", "spread", "--chroma-path", str(tmp_path / "multi"), *tiny_model_args],
                     env={"RAY_ADDRESS": three_nodes["address"]})
    assert summary_of(spread)["embedded"] == 46
    assert "no CUDA device visible to this actor" in spread.stderr  # it asked for the GPU node's GPU

    from ray.util.state import list_actors

    actors = list_actors(address=three_nodes["dashboard"], detail=True, limit=1000)
    decode_nodes = {a.node_id for a in actors if "PrepareImages" in (a.class_name or "")}
    embed_nodes = {a.node_id for a in actors if "EmbedImages" in (a.class_name or "")}
    assert len(decode_nodes) >= 2
    assert embed_nodes == {three_nodes["gpu_node"]}

    single = summary_of(cli("ingest", str(library), "--collection", "single", "--chroma-path", str(tmp_path / "one"), *tiny_model_args))
    assert single["embedded"] == 46
    on_three, on_one = records(tmp_path / "multi", "spread"), records(tmp_path / "one", "single")
    assert set(on_three) == set(on_one)
    assert min(float(on_three[i] @ on_one[i]) for i in on_one) > 0.9999
