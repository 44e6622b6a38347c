"""Collections created with a model and enrichments on by default, and reindexed into another model, through the
CLI (no Ray: small runs go in-process): the records keep their paths, metadata and text, the name answers from the
new model, the old collection stays, renamed, and what could not be read again is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import chromadb
import numpy as np
from conftest import ROOT, summary_line

from samples.sample_photos import real_photos, write_jpeg
from samples.text_photos import write_shop_signs


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def records(chroma: str, name: str) -> dict[str, dict]:
    """{path: {"id", "metadata", "document", "vector"}} of a collection, read straight from Chroma."""
    found = chromadb.PersistentClient(chroma).get_collection(name, embedding_function=None).get(
        include=["metadatas", "documents", "embeddings"])
    return {m["path"]: {"id": i, "metadata": m, "document": d, "vector": np.asarray(v)}
            for i, m, d, v in zip(found["ids"], found["metadatas"], found["documents"], found["embeddings"])}


def test_create_then_reindex_into_another_model(tiny_model, tmp_path):
    first = ["--model", tiny_model["config"], "--checkpoint", tiny_model["checkpoint"]]
    second = ["--model", tiny_model["config"], "--checkpoint", tiny_model["other_checkpoint"]]
    chroma = str(tmp_path / "chroma")
    signs = write_shop_signs(tmp_path / "signs")

    made = command("collections", "create", "shops", "--read-text", "--chroma-path", chroma, *first)
    assert made.returncode == 0, made.stderr[-2000:]
    shown = json.loads(made.stdout)
    assert (shown["records"], shown["model"], shown["enrichments_on"]) == (0, "tiny-clip", ["text"])
    again = command("collections", "create", "shops", "--chroma-path", chroma, *first)
    assert again.returncode == 2 and "name: collection 'shops' exists already" in again.stderr

    # no --read-text: the collection has it on
    ingested = command("ingest", str(tmp_path / "signs"), "--collection", "shops", "--chroma-path", chroma, *first)
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    assert summary_line(ingested.stdout)["text_read"] == len(signs)
    before = records(chroma, "shops")
    street = str(signs["street.jpg"])
    assert "PHARMACIE" in before[street]["metadata"]["text"]
    held = json.loads(command("collections", "show", "shops", "--chroma-path", chroma).stdout)
    assert held["disk_bytes"] > 0 and held["store_disk_bytes"] > held["disk_bytes"]
    last = held["last_ingestion"]
    assert (last["discovered"], last["embedded"], last["failed"]) == (len(signs), len(signs), 0) and last["at"]

    same = command("collections", "reindex", "shops", "--chroma-path", chroma, *first)
    assert same.returncode == 2 and "model: collection 'shops' holds vectors of that very model already" in same.stderr

    def listed() -> list[str]:
        return [line.split()[0] for line in command("collections", "list", "--chroma-path", chroma).stdout.splitlines()]

    # A record that cannot be read again stops the reindex, nothing changed: found after reading the files again...
    gone, changed = str(signs["menu.jpg"]), str(signs["bakery.jpg"])
    write_jpeg(changed, real_photos()["coffee"])  # another photo now
    stopped = command("collections", "reindex", "shops", "--chroma-path", chroma, *second)
    assert stopped.returncode == 2, stopped.stderr[-2000:]
    assert (f"reindex: 1 of {len(signs)} records cannot be read here after reading them again ({changed}: holds other "
            "bytes now") in stopped.stderr and "nothing was changed" in stopped.stderr
    assert listed() == ["shops"]  # the new collection it had made: dropped
    assert {path: record["id"] for path, record in records(chroma, "shops").items()} == {
        path: record["id"] for path, record in before.items()}
    # ... or before reading any (an unmounted disk would otherwise leave the name with no records)
    os.remove(gone)
    stopped = command("collections", "reindex", "shops", "--chroma-path", chroma, *second)
    assert stopped.returncode == 2 and f"({gone}: is gone since it was stored)" in stopped.stderr
    assert listed() == ["shops"]

    errors = tmp_path / "left-out.jsonl"
    reindexed = command("collections", "reindex", "shops", "--chroma-path", chroma, "--errors", str(errors),
                        "--allow-left-out", *second)
    assert reindexed.returncode == 0, reindexed.stderr[-3000:]
    summary = summary_line(reindexed.stdout)
    assert (summary["reindexed"], summary["left_out"], summary["new_contents"]) == (len(signs) - 2, 2, 1)
    left_out = {entry["path"]: entry["reason"] for entry in map(json.loads, errors.read_text().splitlines())}
    assert left_out == {gone: "is gone since it was stored",
                        changed: "holds other bytes now: ingest it again to store them"}
    assert f"left out: {gone}: is gone since it was stored" in reindexed.stderr

    after = records(chroma, "shops")
    assert set(after) == set(before) - {gone}
    assert after[changed]["id"] != before[changed]["id"]  # the photo it holds now, as any ingestion stores it
    for path, record in ((path, record) for path, record in after.items() if path != changed):
        # the same record, text and all, with a vector of the new model
        assert record["id"] == before[path]["id"]
        assert record["metadata"] == before[path]["metadata"]
        assert record["document"] == before[path]["document"]
        assert float(record["vector"] @ before[path]["vector"]) < 0.99
    listed = command("collections", "list", "--chroma-path", chroma).stdout.splitlines()
    previous = summary["previous"]
    assert previous.startswith("shops.before-") and any(line.startswith(f"{previous}  {len(signs)} records") for line in listed)
    new_weights = json.loads(command("collections", "show", "shops", "--chroma-path", chroma).stdout)
    old_weights = json.loads(command("collections", "show", previous, "--chroma-path", chroma).stdout)
    assert new_weights["weights"] != old_weights["weights"] and new_weights["enrichments_on"] == ["text"]

    # searches answer from the new model, by the words found before too
    found = command("search", "pharmacie", "--collection", "shops", "--chroma-path", chroma, "-k", "1")
    assert found.returncode == 0 and street in found.stdout, found.stderr[-2000:]
    missing = command("collections", "reindex", "no-such", "--chroma-path", chroma, *second)
    assert missing.returncode == 2 and "collection: no collection 'no-such'" in missing.stderr
