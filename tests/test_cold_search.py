"""Precision across a collection's life, and a search from a cold shell: vectors made in bf16 and in fp32 find
the same photos first, whichever precision the query is embedded in; once the text tower's export is made, a
search imports no torch at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, summary_of

# A search as `python -m ray_pipeline` runs it (its `main`), that says on its last stderr line whether torch
# was imported.
SEARCH_AND_SAY = """
import sys
from ray_pipeline.cli import main
code = main(sys.argv[1:])
print("torch imported:", "torch" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_args):
    """The same photos ingested twice without a cluster: in bf16 and in fp32."""
    from samples.sample_photos import write_library

    work = tmp_path_factory.mktemp("precision")
    write_library(str(work / "photos"))
    env = no_cluster_env(work / "cache")
    for precision in ("bf16", "fp32"):
        ingested = run(env, "ingest", str(work / "photos"), "--collection", precision, "--chroma-path",
                       str(work / "chroma"), "--precision", precision, *tiny_model_args)
        summary = summary_of(ingested)
        assert (summary["embedded"], summary["actors"]["precision"]) == (6, precision)
    return work, env


def no_cluster_env(cache: Path) -> dict:
    """As a user's shell with no cluster, its own cache folder (where the text tower's export is kept)."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cache)}


def run(env: dict, *args: str, script: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "ray_pipeline", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)


def found(env: dict, work: Path, collection: str, *query: str, script: str | None = None) -> list[str]:
    completed = run(env, "search", *query, "--collection", collection, "--chroma-path", str(work / "chroma"), "-k", "6",
                    "--json", script=script)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [result["id"] for result in json.loads(completed.stdout)["results"]]


def test_vectors_made_in_bf16_and_fp32_agree_and_find_the_same_photos_first(library):
    import chromadb

    work, env = library
    client = chromadb.PersistentClient(path=str(work / "chroma"))
    bf16, fp32 = (client.get_collection(name).get(include=["embeddings"]) for name in ("bf16", "fp32"))
    assert sorted(bf16["ids"]) == sorted(fp32["ids"])
    for record_id, vector in zip(bf16["ids"], bf16["embeddings"]):
        assert float(np.dot(vector, fp32["embeddings"][fp32["ids"].index(record_id)])) >= 0.999
    del client
    photo = str(work / "photos" / "astronaut.jpg")
    # A collection of one precision searched with queries embedded in the other: the same photos, in the same order.
    assert found(env, work, "bf16", "--image", photo, "--precision", "fp32") == found(env, work, "fp32", "--image", photo,
                                                                                       "--precision", "bf16")
    assert found(env, work, "bf16", "--image", photo)[0] == found(env, work, "fp32", "--image", photo)[0]
    words = ("an astronaut in a white suit",)
    assert found(env, work, "bf16", *words, "--precision", "fp32")[:3] == found(env, work, "fp32", *words, "--precision", "bf16")[:3]


def test_a_search_from_a_cold_shell_imports_no_torch(library):
    """The first text search of a model embeds with torch and exports its text tower; the next imports no
    torch (checked in the searching process itself: `torch` is not in sys.modules when it ends) and finds
    the same photos."""
    work, env = library
    env = {**env, "XDG_CACHE_HOME": str(work / "cold-cache")}
    text = ("a rocket on its launch pad",)
    first = run(env, "search", *text, "--collection", "fp32", "--chroma-path", str(work / "chroma"), "-k", "6", "--json",
                script=SEARCH_AND_SAY)
    assert first.returncode == 0 and first.stderr.rstrip().endswith("torch imported: True"), first.stderr[-3000:]
    assert list((work / "cold-cache" / "ray-photo-embeddings" / "text-towers").glob("*/text.onnx"))
    cold = run(env, "search", *text, "--collection", "fp32", "--chroma-path", str(work / "chroma"), "-k", "6", "--json",
               script=SEARCH_AND_SAY)
    assert cold.returncode == 0 and cold.stderr.rstrip().endswith("torch imported: False"), cold.stderr[-3000:]
    ids = [result["id"] for result in json.loads(cold.stdout)["results"]]
    assert ids[:3] == [result["id"] for result in json.loads(first.stdout)["results"]][:3]
