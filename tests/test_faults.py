"""Faults caused for real in the middle of a job: an embedding actor killed, the Chroma server stopped,
the driver killed, two jobs on one collection. What is promised: nothing lost, nothing duplicated,
and a re-run stores exactly what is missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, summary_line, summary_of, wait_for

from samples.sample_photos import write_many

COUNT = 600


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    write_many(str(folder), COUNT)
    return folder


def start_ingest(ray_head, folder, server, collection, tiny_model_args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ray_pipeline", "ingest", str(folder), "--collection", collection,
         "--chroma-url", server.url, "--batch-size", "2", *tiny_model_args],
        env={**os.environ, **ray_head["env"], "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def settled_count(server, collection) -> int:
    """The record count once writes in flight have landed (unchanged for 3 s)."""
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 3:
        now = server.count(collection)
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.5)
    return last


def assert_complete(server, collection):
    """Every file stored exactly once, each record whole."""
    import chromadb

    got = chromadb.HttpClient(host="127.0.0.1", port=server.port).get_collection(collection).get(include=["embeddings", "metadatas"])
    assert len(got["ids"]) == len(set(got["ids"])) == COUNT
    assert len({m["path"] for m in got["metadatas"]}) == COUNT
    assert np.allclose(np.linalg.norm(np.asarray(got["embeddings"]), axis=1), 1, atol=1e-4)


def rerun(cli, many, server, collection, tiny_model_args) -> dict:
    summary = summary_of(cli("ingest", str(many), "--collection", collection, "--chroma-url", server.url, *tiny_model_args))
    assert summary["embedded"] + summary["skipped_existing"] == COUNT
    assert summary["skipped_existing"] > 0  # what the interrupted job wrote was kept
    assert_complete(server, collection)
    return summary


def embedding_actor_pid(ray_head) -> int | None:
    from ray.util.state import list_actors

    actors = list_actors(address=ray_head["dashboard"], filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return next((a.pid for a in actors if "EmbedStage" in (a.class_name or "")), None)


def test_embedding_actor_killed_mid_job(ray_head, many, chroma_server, tiny_model_args):
    job = start_ingest(ray_head, many, chroma_server, "actor-killed", tiny_model_args)
    pid = wait_for(lambda: embedding_actor_pid(ray_head), timeout=180, interval=0.2, what="the embedding actor")
    time.sleep(1)  # let it take its first batches
    os.kill(pid, signal.SIGKILL)
    out, err = job.communicate(timeout=400)
    assert job.returncode == 0, err[-3000:]
    assert summary_line(out)["discovered"] == COUNT
    assert chroma_server.count("actor-killed") == COUNT
    assert_complete(chroma_server, "actor-killed")


def test_chroma_server_stopped_mid_job(cli, ray_head, many, chroma_server, tiny_model_args):
    """Killed as soon as the first records are written, while most files are still to be read: whichever stage
    meets the dead server first (reading, or writing) ends the job with one line."""
    job = start_ingest(ray_head, many, chroma_server, "server-stopped", tiny_model_args)
    wait_for(lambda: chroma_server.count("server-stopped") > 0, timeout=180, interval=0.1, what="first records")
    chroma_server.stop()
    started = time.monotonic()
    out, err = job.communicate(timeout=300)
    assert job.returncode == 2, err[-3000:]
    assert_one_line(err, chroma_server)
    assert time.monotonic() - started < 240  # bounded retries, then a clear failure
    chroma_server.start()
    rerun(cli, many, chroma_server, "server-stopped", tiny_model_args)


def assert_one_line(stderr: str, server) -> None:
    """The run ends with one line naming the store and what to do: no traceback, no Ray wrapping."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and f"Chroma server {server.url} is unreachable: gave up after 6 attempts" in last, \
        stderr[-3000:]
    assert "run again to store the rest" in last
    assert "Traceback" not in stderr and "UserCodeException" not in stderr


def test_chroma_server_stopped_during_a_run_in_the_commands_own_process(many, chroma_server, tiny_model_args):
    """No cluster, and every file read in the command's own process: the same one line, exit 2."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    job = subprocess.Popen(
        [sys.executable, "-m", "ray_pipeline", "ingest", str(many), "--collection", "stopped-here", "--chroma-url",
         chroma_server.url, "--inline-max-files", str(COUNT), *tiny_model_args],
        env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: chroma_server.count("stopped-here") > 0, timeout=180, interval=0.1, what="first records")
    chroma_server.stop()
    out, err = job.communicate(timeout=300)
    assert job.returncode == 2, err[-3000:]
    assert "route: in_process (" in err
    assert_one_line(err, chroma_server)


def test_driver_killed_mid_job(cli, ray_head, many, chroma_server, tiny_model_args):
    job = start_ingest(ray_head, many, chroma_server, "driver-killed", tiny_model_args)
    wait_for(lambda: chroma_server.count("driver-killed") > 0, timeout=180, what="first records")
    job.kill()
    job.wait(timeout=60)
    kept = settled_count(chroma_server, "driver-killed")
    assert 0 < kept < COUNT
    summary = rerun(cli, many, chroma_server, "driver-killed", tiny_model_args)
    assert summary["embedded"] == COUNT - kept  # only what was missing


def test_two_jobs_on_one_collection_with_a_server(ray_head, many, chroma_server, tiny_model_args):
    jobs = [start_ingest(ray_head, many, chroma_server, "together", tiny_model_args) for _ in range(2)]
    for job in jobs:
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
        assert summary_line(out)["failed"] == 0
    assert_complete(chroma_server, "together")
