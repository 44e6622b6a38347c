"""The same command on a local Ray it starts itself, on a cluster through `ray job submit`, from
manifests, and against a real Chroma server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, summary_line, summary_of

from samples.sample_photos import write_library


@pytest.fixture(scope="module")
def sample_library(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("samples") / "photos"
    write_library(str(folder))
    return folder


def stored_ids(chroma_path, collection):
    import chromadb

    return set(chromadb.PersistentClient(path=str(chroma_path)).get_collection(collection).get(include=[])["ids"])


def test_ray_job_submit(ray_head, sample_library, tmp_path, tiny_model_args):
    chroma = tmp_path / "chroma"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    completed = subprocess.run(
        [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", ray_head["dashboard"],
         "--working-dir", str(ROOT), "--",
         "python", "-m", "ray_pipeline", "ingest", str(sample_library), "--collection", "jobs",
         "--chroma-path", str(chroma), *tiny_model_args],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "succeeded" in completed.stdout + completed.stderr
    summary = summary_line(completed.stdout)
    assert summary["embedded"] == len(os.listdir(sample_library)) == 6
    assert len(stored_ids(chroma, "jobs")) == 6


def no_cluster_env() -> dict:
    """As in a shell with no RAY_ADDRESS (and no head on this machine's default address file)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(ROOT)}


def test_a_small_ingestion_without_a_cluster_runs_in_its_own_process(cli, sample_library, tmp_path, tiny_model_args):
    """No Ray at all: the same records as the Ray Data job writes, the same summary, the same re-run."""
    args = ["--chroma-path", str(tmp_path / "chroma"), *tiny_model_args]
    here = subprocess.run([sys.executable, "-m", "ray_pipeline", "ingest", str(sample_library), "--collection", "here", *args],
                          env=no_cluster_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert summary_of(here)["embedded"] == 6
    route = summary_of(here)["route"]
    assert route["kind"] == "in_process" and route["reason"].startswith("6 files to read, no cluster running, expected in "
                                                                        "this process ")
    assert route["reason"].endswith("s: in this process, without Ray") and ", on a local Ray " in route["reason"]
    assert here.stderr.count("route: in_process (6 files to read") == 1  # the log says it once
    assert "Ray instance" not in here.stderr and "Dataset" not in here.stderr
    on_ray = summary_of(cli("ingest", str(sample_library), "--collection", "on-ray", "--inline-max-files", "0", *args))
    assert on_ray["embedded"] == 6 and on_ray["route"]["kind"] == "ray_data" and "on a running Ray cluster" in on_ray["route"]["reason"]

    import chromadb

    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    inline, on_ray = (client.get_collection(name).get(include=["embeddings", "metadatas"]) for name in ("here", "on-ray"))
    assert sorted(inline["ids"]) == sorted(on_ray["ids"])
    for record_id, vector, metadata in zip(inline["ids"], inline["embeddings"], inline["metadatas"]):
        index = on_ray["ids"].index(record_id)
        assert float(np.dot(vector, on_ray["embeddings"][index])) > 0.99999
        assert metadata == on_ray["metadatas"][index]
    del client
    rerun = subprocess.run([sys.executable, "-m", "ray_pipeline", "ingest", str(sample_library), "--collection", "here", *args],
                           env=no_cluster_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert (summary_of(rerun)["embedded"], summary_of(rerun)["skipped_existing"]) == (0, 6)
    assert summary_of(rerun)["route"]["kind"] == "none"


def test_starts_its_own_ray_from_a_text_manifest(sample_library, tmp_path, tiny_model_args):
    """No RAY_ADDRESS and no head on this machine's default address file, and more files than are run
    in-process (--inline-max-files): a local Ray is started."""
    manifest = tmp_path / "manifest.txt"
    names = sorted(os.listdir(sample_library))[:3]
    manifest.write_text("# three of them\n\n" + "\n".join(os.path.relpath(sample_library / n, tmp_path) for n in names) + "\n")
    completed = subprocess.run(
        [sys.executable, "-m", "ray_pipeline", "ingest", "--manifest", str(manifest), "--collection", "listed",
         "--chroma-path", str(tmp_path / "chroma"), "--inline-max-files", "2", *tiny_model_args],
        env=no_cluster_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert summary_of(completed)["embedded"] == 3
    assert "a new local Ray instance" in completed.stderr


def test_a_parquet_manifest_is_streamed_and_the_driver_does_not_grow_with_it(ray_head, sample_library, tmp_path,
                                                                             tiny_model_args):
    """A folder of Parquet files, read by Ray Data: a path listed twice is taken once, a relative entry is
    the manifest's folder's, a RAW and its JPEG are paired, a broken file is remembered; then 10^6 rows
    naming the same files settle them all, and the driver's peak memory does not grow with the rows (a
    listing held by the driver would take over 100 MB more for 10^6 paths)."""
    import chromadb
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.manifest_memory import run_measured, write_manifest
    from ray_pipeline.steps.summary import summary_in
    from samples.sample_photos import real_photos, write_dng, write_jpeg

    shots, listed = tmp_path / "shots", tmp_path / "listed"
    shots.mkdir(), listed.mkdir()
    write_dng(str(shots / "DSC_0007.dng"), real_photos()["chelsea"])
    write_jpeg(str(shots / "DSC_0007.jpg"), real_photos()["chelsea"])
    (shots / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    paths = [str(sample_library / n) for n in sorted(os.listdir(sample_library))]
    pq.write_table(pa.table({"path": paths + [paths[0]], "note": list(range(len(paths) + 1))}), listed / "a.parquet")
    pq.write_table(pa.table({"path": [os.path.relpath(shots / "DSC_0007.dng", listed), str(shots / "DSC_0007.jpg"),
                                      str(shots / "broken.jpg"), None]}), listed / "b.parquet")
    store = ["--collection", "parquet", "--chroma-path", str(tmp_path / "chroma"), *tiny_model_args]

    first = run_measured(["ingest", "--manifest", str(listed), *store], ray_head["env"])
    summary = summary_in(first.stdout) or {}
    assert (summary.get("discovered"), summary.get("embedded"), summary.get("failed"), summary.get("duplicates")) == (9, 8, 1, 0), \
        first.stderr[-3000:]
    records = chromadb.PersistentClient(path=str(tmp_path / "chroma")).get_collection("parquet").get(include=["metadatas"])
    by_path = {m["path"]: (i, m) for i, m in zip(records["ids"], records["metadatas"])}
    (raw_id, raw), (jpeg_id, jpeg) = by_path[str(shots / "DSC_0007.dng")], by_path[str(shots / "DSC_0007.jpg")]
    assert (raw["pair_of"], raw["pair_role"], jpeg["pair_of"], jpeg["pair_role"]) == (jpeg_id, "raw", raw_id, "shown")

    every = [*paths, str(shots / "DSC_0007.dng"), str(shots / "DSC_0007.jpg"), str(shots / "broken.jpg")]
    write_manifest(tmp_path / "million.parquet", every, 1_000_000)
    again = run_measured(["ingest", "--manifest", str(tmp_path / "million.parquet"), *store], ray_head["env"])
    summary = summary_in(again.stdout) or {}
    assert (summary.get("discovered"), summary.get("skipped_existing"), summary.get("failed")) == (9, 8, 1), again.stderr[-3000:]
    assert "1 failed before and unchanged; 0 to read" in again.stderr  # remembered, not read again
    # The driver's peak, with a million rows settled, is the first run's (9 rows, read and embedded): model,
    # torch and Ray's client, not the listing.
    assert again.peak_mib - first.peak_mib < 40, f"driver peak MiB: 9 rows {first.peak_mib:.0f}, 10^6 rows {again.peak_mib:.0f}"


def test_chroma_server_mode(cli, chroma_server, sample_library, tiny_model_args):
    chroma_server = chroma_server.url
    import chromadb

    args = ["--collection", "served", "--chroma-url", chroma_server, *tiny_model_args]
    first = summary_of(cli("ingest", str(sample_library), *args))
    assert first["embedded"] == 6
    again = summary_of(cli("ingest", str(sample_library), *args))
    assert again["embedded"] == 0 and again["skipped_existing"] == 6
    port = int(chroma_server.rsplit(":", 1)[1])
    collection = chromadb.HttpClient(host="127.0.0.1", port=port).get_collection("served")
    assert collection.count() == 6
    found = cli("search", "--image", str(sample_library / "coffee.png"), "--collection", "served",
                "--chroma-url", chroma_server, "--json")
    assert json.loads(found.stdout)["results"][0]["path"] == str(sample_library / "coffee.png")


NICENESS_PROBE = """
import os, ray
from ray_pipeline.cluster.runtime import as_batch_work

@ray.remote(num_cpus=0)
class Stage:
    def __init__(self):
        as_batch_work()  # as PrepareStage and EmbedStage do when Ray Data starts them

    def niceness(self):
        return os.nice(0)

ray.init()
before = os.nice(0)
as_batch_work()
print(before, os.nice(0), ray.get(Stage.remote().niceness.remote()))
"""


def test_a_jobs_actors_give_way_to_searches_and_the_process_that_starts_them_does_not(ray_head):
    """A bulk job's actors run at nice 19 (Ray's other workers, the app's replicas among them, at 15) so a search
    in the app is not queued behind their batches; a driver (the CLI, a test) keeps its own priority although it
    builds the same stages."""
    env = {**os.environ, **ray_head["env"]}
    probed = subprocess.run([sys.executable, "-c", NICENESS_PROBE], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert probed.returncode == 0, probed.stderr[-3000:]
    before, after, actor = map(int, probed.stdout.split()[-3:])
    assert after == before
    assert actor == 19
