"""The embedding stage's batches: torch.compile on the CPU gives the vectors eager mode gives, and a batch
that runs out of GPU memory is halved and run again, with no picture lost or embedded twice."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, summary_of

from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.model import clip as clip_model
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.model.embedders import LocalEmbedder
from samples.sample_photos import write_library


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return clip_model.resolve(ModelSpec(tiny_model["config"], None, tiny_model["checkpoint"]))


def pictures(resolved, count: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (count, *resolved.geometry.pixel_shape), dtype=np.uint8)


class OutOfMemoryAbove:
    """A fake fault, since this machine has no GPU to run out of: CUDA's out-of-memory error for any batch
    of more than `fits` pictures, raised where the real one would be (the model's forward pass). The
    batches that ran are kept."""

    def __init__(self, visual, fits: int):
        self.visual, self.fits, self.ran = visual, fits, []

    def __call__(self, batch):
        if len(batch) > self.fits:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected: {len(batch)} > {self.fits})")
        self.ran.append(len(batch))
        return self.visual(batch)


@pytest.mark.unit
def test_a_batch_that_runs_out_of_memory_is_halved_and_run_again(tiny, caplog):
    resolved, network = tiny
    eager = LocalEmbedder(resolved, "cpu", "off", network=network)
    photos = pictures(resolved, 11)
    expected = eager.embed(photos)
    faulty = LocalEmbedder(resolved, "cpu", "off", network=network)
    faulty.visual = OutOfMemoryAbove(faulty.visual, fits=3)
    with caplog.at_level(logging.WARNING, logger="ray_pipeline.model.embedders"):
        vectors = faulty.embed(photos)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)  # every picture once, in order
    assert faulty.visual.ran == [2, 2, 2, 2, 2, 1] and faulty.batch == 2  # 11 -> 5 -> 2 at once, and it stays
    assert [r.getMessage() for r in caplog.records] == [
        "out of memory on cpu with 11 pictures at once: embedding 5 at once from now on",
        "out of memory on cpu with 5 pictures at once: embedding 2 at once from now on"]
    faulty.embed(photos[:4])
    assert faulty.visual.ran[-2:] == [2, 2]  # no new halving: the batch found is kept


@pytest.mark.unit
def test_a_padded_batch_is_halved_from_its_whole_size(tiny):
    """A compiled graph runs short chunks padded to its batch: the batch that ran out of memory is the
    whole batch, not the chunk (3 new pictures in a batch of 8 that fits 4: a batch of 4, not 1)."""
    resolved, network = tiny
    expected = LocalEmbedder(resolved, "cpu", "off", network=network).embed(pictures(resolved, 3))
    encoder = LocalEmbedder(resolved, "cpu", "off", network=network)
    encoder.visual, encoder.pad, encoder.batch = OutOfMemoryAbove(encoder.visual, fits=4), True, 8
    np.testing.assert_allclose(encoder.embed(pictures(resolved, 3)), expected, atol=1e-6)
    assert (encoder.batch, encoder.visual.ran) == (4, [4])


@pytest.mark.unit
def test_the_batch_that_fits_is_found_at_start(tiny):
    """On CUDA the encoder warms up on its whole batch, so a batch that cannot fit is halved before any
    file's pictures come (here on the CPU, with a fixed batch, as CUDA has one)."""
    resolved, network = tiny
    encoder = LocalEmbedder(resolved, "cpu", "off", network=network)
    encoder.visual = OutOfMemoryAbove(encoder.visual, fits=20)
    encoder.batch = 64
    encoder.embed(np.zeros((64, *resolved.geometry.pixel_shape), np.uint8))  # the start's warm-up batch
    assert encoder.batch == 16


@pytest.mark.unit
def test_one_picture_that_does_not_fit_is_a_clear_error(tiny):
    resolved, network = tiny
    encoder = LocalEmbedder(resolved, "cpu", "off", network=network)
    encoder.visual = OutOfMemoryAbove(encoder.visual, fits=0)
    with pytest.raises(UserFacingError, match="does not fit in the memory of cpu with even one picture"):
        encoder.embed(pictures(resolved, 3))


def test_compile_on_gives_the_eager_vectors_on_the_cpu(tmp_path, tiny_model_args):
    """`--compile on` through the CLI, with no cluster (in its own process): one batch shape, the last
    batch padded (6 photos, batches of 32), and the records hold what eager mode writes (in fp32: bf16's
    rounding differs between the two by about 1e-3, within what `tests/test_precision.py` allows)."""
    import chromadb
    from test_where_it_runs import no_cluster_env

    photos = tmp_path / "photos"
    write_library(str(photos))
    for mode in ("off", "on"):
        completed = subprocess.run(
            [sys.executable, "-m", "ray_pipeline", "ingest", str(photos), "--collection", f"compile-{mode}",
             "--chroma-path", str(tmp_path / "chroma"), "--compile", mode, "--precision", "fp32", *tiny_model_args],
            env=no_cluster_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert summary_of(completed)["embedded"] == 6
        assert ("image tower compiled (torch.compile) on cpu for batches of 32" in completed.stderr) == (mode == "on")
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    eager, compiled = (client.get_collection(f"compile-{mode}").get(include=["embeddings"]) for mode in ("off", "on"))
    assert sorted(eager["ids"]) == sorted(compiled["ids"])
    by_id = dict(zip(compiled["ids"], compiled["embeddings"]))
    for record_id, vector in zip(eager["ids"], eager["embeddings"]):
        np.testing.assert_allclose(by_id[record_id], vector, atol=1e-5)
