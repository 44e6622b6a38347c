"""One file's journey (read, hash, claim, the stored check, decode, metadata) and the inline runner that
the CLI and the Serve app share, without Ray: a real embedded Chroma and a tiny OpenCLIP in this process."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest
from photo_cases import sha256_of

from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.outcome import Outcome
from ray_pipeline.core.paths import FileFailure
from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.runs import in_process
from ray_pipeline.runs.in_process import RunStopped, journeys
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.steps.journey import DuplicateRegistry, Journey
from samples.sample_photos import write_library, write_many

pytestmark = pytest.mark.unit

GEOMETRY = InputGeometry(224, 224)
MODEL = {"model": "tiny-clip", "weights": "test", "embedding_dim": 32}


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "photos"
    write_library(str(folder))
    return folder


@pytest.fixture
def store(tmp_path):
    with opened_for_writing(StoreTarget("journeys", path=str(tmp_path / "chroma")), MODEL) as opened:
        yield opened


def journey_of(store, within=()) -> Journey:
    return Journey(store, DuplicateRegistry().claim, GEOMETRY, defaults.MAX_PIXELS, within)


def by_name(files):
    return {os.path.basename(f.path): f for f in files}


def test_new_files_come_back_decoded_with_their_metadata(store, library):
    files = journey_of(store).run(sorted(str(p) for p in library.iterdir()))
    assert [f.status for f in files] == [Outcome.NEW] * 6
    for f in files:
        assert f.id == sha256_of(f.path)
        assert f.photo.pixels.shape == (224, 224, 3) and f.photo.pixels.dtype == np.uint8
        assert f.metadata["path"] == f.path and f.metadata["file_size"] == os.path.getsize(f.path)
        assert f.file.data == b""  # the bytes are let go once the picture is made
    astronaut = by_name(files)["astronaut.jpg"].metadata
    assert astronaut["camera_make"] == "Sampleco" and astronaut["gps_lat"] == pytest.approx(48.8584, abs=1e-4)


def test_a_copy_is_a_duplicate_within_one_ingestion_and_across_calls(store, library):
    shutil.copy(library / "coffee.png", library / "coffee copy.png")
    journey = journey_of(store)
    first = by_name(journey.run([str(library / "coffee.png"), str(library / "coffee copy.png")]))
    assert (first["coffee.png"].status, first["coffee copy.png"].status) == (Outcome.NEW, Outcome.DUPLICATE)
    assert first["coffee copy.png"].decode_seconds == 0  # never decoded
    again = journey.run([str(library / "coffee copy.png"), str(library / "coffee.png")])
    assert [f.status for f in again] == [Outcome.DUPLICATE, Outcome.NEW]  # the same path keeps its claim (a retried batch)


def test_stored_contents_are_not_decoded_and_their_records_follow_the_file(store, library):
    path = library / "rocket.webp"
    (photo,) = journey_of(store).run([str(path)])
    store.upsert([photo.id], np.ones((1, 32), np.float32), [photo.metadata])
    moved = library / "moved.webp"
    os.rename(path, moved)
    os.utime(moved, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    (seen,) = journey_of(store).run([str(moved)])
    assert (seen.status, seen.decode_seconds, seen.photo) == (Outcome.EXISTING, 0.0, None)
    record = store.records([seen.id])[seen.id]
    assert (record["path"], record["mtime_ns"]) == (str(moved), 1_700_000_000_000_000_000)


def test_each_failure_has_its_reason_and_the_others_go_on(store, library, tmp_path):
    (library / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (library / "empty.png").write_bytes(b"")
    os.symlink(library / "nowhere.jpg", library / "dangling.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(library / "china.tiff", outside / "secret.tiff")
    os.symlink(outside / "secret.tiff", library / "leak.tiff")
    names = ["broken.jpg", "empty.png", "dangling.jpg", "leak.tiff", "astronaut.jpg"]
    files = by_name(journey_of(store, within=(str(library),)).run([str(library / n) for n in names]))
    assert files["astronaut.jpg"].status == Outcome.NEW
    reasons = {name: f.reason for name, f in files.items() if f.status == Outcome.FAILED}
    assert set(reasons) == {"broken.jpg", "empty.png", "dangling.jpg", "leak.tiff"}
    assert reasons["empty.png"] == "empty file"
    assert reasons["dangling.jpg"] == "broken symlink"
    assert reasons["leak.tiff"] == "resolves outside the allowed folders"
    assert files["leak.tiff"].file is None  # refused before it is read
    assert "cannot" in reasons["broken.jpg"] or "not a recognised" in reasons["broken.jpg"]


def test_claims_are_idempotent_per_path_and_safe_across_threads():
    registry = DuplicateRegistry()
    content = "ab" * 32
    results: list[bool] = []

    def claim(path):
        results.extend(registry.claim([(content, path)]))

    threads = [threading.Thread(target=claim, args=(f"/p/{i}",)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    owner = next(f"/p/{i}" for i in range(16) if registry.claim([(content, f"/p/{i}")]) == [True])
    assert registry.claim([(content, owner), (content, "/p/other")]) == [True, False]


B = 8  # new files per batch in these tests: a few chunks each


class BatchSizes(Reporter):
    """A reporter that keeps the size of each batch it hears of (a run in this process, no board, no metrics)."""

    def __init__(self):
        super().__init__(None, "journeys", to_metrics=False)
        self.sizes: list[int] = []

    def counted(self, tally, discovered: int = 0) -> None:
        self.sizes.append(tally.files)


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from ray_pipeline.model import clip as clip_model
    from ray_pipeline.model.embedders import LocalEmbedder
    from samples.models import save_tiny_clip

    config, checkpoint = save_tiny_clip(tmp_path_factory.mktemp("model"), seed=1234)
    resolved, network = clip_model.resolve(clip_model.ModelSpec(str(config), None, str(checkpoint)))
    return LocalEmbedder(resolved, network=network)


def test_inline_ingestion_writes_whole_records_batch_by_batch(store, tmp_path, tiny_encoder):
    folder = tmp_path / "many"
    paths = sorted(write_many(str(folder), 2 * B + 3))
    shutil.copy(paths[0], folder / "copy.jpg")
    (folder / "broken.jpg").write_bytes(b"nope")
    paths += [str(folder / "copy.jpg"), str(folder / "broken.jpg")]
    batches = BatchSizes()
    tally = journeys(paths, journey_of(store), tiny_encoder, store, batches, batch=B)
    assert tally.summary() == {"discovered": len(paths), "embedded": 2 * B + 3, "skipped_existing": 0,
                               "duplicates": 1, "failed": 1}
    assert tally.errors == [FileFailure(str(folder / "broken.jpg"), "not a recognised image format")]
    assert batches.sizes == [B, B, len(paths) - 2 * B]
    got = store.collection.get(include=["embeddings", "metadatas"])
    assert sorted(got["ids"]) == sorted({sha256_of(p) for p in paths[: 2 * B + 3]})
    assert np.allclose(np.linalg.norm(np.asarray(got["embeddings"]), axis=1), 1, atol=1e-5)
    assert all(m["path"] in paths for m in got["metadatas"])

    again = journeys(paths, journey_of(store), tiny_encoder, store, BatchSizes(), batch=B)
    assert (again.summary()["embedded"], again.summary()["skipped_existing"]) == (0, 2 * B + 3)


def test_an_encoder_that_fails_leaves_no_partial_record(store, tmp_path, tiny_encoder):
    paths = sorted(write_many(str(tmp_path / "many"), 2 * B))
    calls = []

    class EmbedThenFail:  # a fake: a model lost in the middle of an ingestion, which cannot be caused here
        def embed(self, pixels):
            calls.append(len(pixels))
            if len(calls) == 2:
                raise RuntimeError("the model went away")
            return tiny_encoder.embed(pixels)

    with pytest.raises(RuntimeError, match="went away"):
        journeys(paths, journey_of(store), EmbedThenFail(), store, BatchSizes(), batch=B)
    assert calls == [B, B]  # the new files embedded a batch at a time
    got = store.collection.get(include=["embeddings"])
    assert sorted(got["ids"]) == sorted(sha256_of(p) for p in paths[:B])  # the first batch, whole
    assert len(got["embeddings"]) == B


def test_an_ingestion_that_stops_reads_no_further_than_the_journeys_in_flight(store, tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setattr(in_process, "AHEAD", 3 * B)
    paths = sorted(write_many(str(tmp_path / "many"), 10 * B))
    registry, claimed = DuplicateRegistry(), []

    def claim(pairs):  # the journey claims each chunk once it has read it
        claimed.extend(path for _, path in pairs)
        return registry.claim(pairs)

    journey = Journey(store, claim, GEOMETRY, defaults.MAX_PIXELS)
    with pytest.raises(RunStopped):  # as a run asked to stop: asked after its first batch
        journeys(paths, journey, tiny_encoder, store, BatchSizes(), stop_requested=lambda: True, batch=B)
    assert len(claimed) <= in_process.AHEAD + B < len(paths)  # those ahead at the start, and one more chunk for each taken
    assert store.collection.count() == B  # the first batch, written whole before the stop
