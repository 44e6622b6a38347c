"""The model's arithmetic and a search without torch: bf16 where the CPU computes in it natively, its vectors
those of fp32 within the tolerance measured (benchmarks/RESULTS.md, issue 29); the text tower's ONNX export,
tokenised without torch, gives torch's vectors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.files.decode import fit_to_input
from ray_pipeline.model import clip as clip_model
from ray_pipeline.model import embedders
from ray_pipeline.model.embedders import LocalEmbedder, precision_on
from ray_pipeline.model.text_tower import ClipTokenizer, cache_text_tower, cached_text_tower
from samples.models import save_tiny_clip
from samples.sample_photos import real_photos

pytestmark = pytest.mark.unit

# Measured on the tiny model and real photos (benchmarks/RESULTS.md, issue 29): bf16 against fp32.
BF16_AGREEMENT = 0.999
TEXTS = ["a cat on a sofa", "A ROCKET!!  launching &amp; smoke", "café crème, 2 croissants", "🐱 + ☕ = ♥", "",
         "the " * 100, "Rue de Rivoli 12", "naïve résumé — “quoted” words", "1234567890 x 3.14159"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config, checkpoint = save_tiny_clip(tmp_path_factory.mktemp("model"), seed=1234)
    return clip_model.resolve(clip_model.ModelSpec(str(config), None, str(checkpoint)))


def photos(resolved) -> np.ndarray:
    return np.stack([fit_to_input(Image.fromarray(p).convert("RGB"), resolved.geometry) for p in real_photos().values()])


def test_auto_is_bf16_where_the_cpu_computes_in_it_and_fp16_on_a_gpu(monkeypatch):
    monkeypatch.setattr(embedders, "native_bf16", lambda: True)
    assert (precision_on("auto", "cpu"), precision_on("auto", "cuda")) == ("bf16", "fp16")
    monkeypatch.setattr(embedders, "native_bf16", lambda: False)
    assert precision_on("auto", "cpu") == "fp32"
    assert precision_on("fp32", "cuda") == "fp32" and precision_on("bf16", "cpu") == "bf16"
    with pytest.raises(UserFacingError, match="--precision fp16 needs a GPU"):
        precision_on("fp16", "cpu")


def test_this_machine_says_what_its_cpu_can():
    flags = open("/proc/cpuinfo").read().split()
    assert embedders.native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_bf16_vectors_are_fp32s_within_the_measured_tolerance(tiny):
    resolved, network = tiny
    pictures = photos(resolved)
    fp32 = LocalEmbedder(resolved, network=network, precision="fp32", texts=True)
    bf16 = LocalEmbedder(resolved, precision="bf16", texts=True)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16") and bf16.described()["precision"] == "bf16"
    assert np.min(np.sum(fp32.embed(pictures) * bf16.embed(pictures), axis=1)) >= BF16_AGREEMENT
    assert np.min(np.sum(fp32.embed_texts(TEXTS) * bf16.embed_texts(TEXTS), axis=1)) >= BF16_AGREEMENT
    assert bf16.embed(pictures).dtype == np.float32  # stored as float32 whatever the arithmetic


def test_the_tokenizer_without_torch_gives_openclips_ids():
    import open_clip

    theirs = open_clip.get_tokenizer("ViT-B-32")(TEXTS).numpy()
    assert np.array_equal(ClipTokenizer()(TEXTS), theirs)


def test_the_exported_text_tower_gives_torchs_vectors_and_is_kept_once(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    resolved, network = tiny
    metadata = resolved.collection_metadata()
    assert cached_text_tower(metadata) is None  # none yet: searches load torch, once
    assert cache_text_tower(metadata, resolved, "a cat")
    exported = list((tmp_path / "cache" / "ray-photo-embeddings" / "text-towers").iterdir())
    assert len(exported) == 1 and sorted(p.name for p in exported[0].iterdir()) == ["text.onnx", "tokenizer.json"]
    tower = cached_text_tower(metadata)
    expected = LocalEmbedder(resolved, network=network, precision="fp32", texts=True).embed_texts(TEXTS)
    assert np.min(np.sum(tower.embed_texts(TEXTS) * expected, axis=1)) >= 0.9999
    assert cache_text_tower(metadata, resolved, "a cat")  # there already: nothing made again
    assert list((tmp_path / "cache" / "ray-photo-embeddings" / "text-towers").iterdir()) == exported
    other = {**metadata, "weights": "checkpoint:sha256:" + "0" * 64}  # other weights: another export
    assert cached_text_tower(other) is None


def test_a_checkpoints_digest_is_kept_until_the_file_changes(tmp_path, monkeypatch):
    """A re-run with nothing new must not hash a checkpoint of hundreds of MB each time: its digest is kept."""
    import hashlib
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    checkpoint = tmp_path / "weights.pt"
    checkpoint.write_bytes(b"w" * 1000)
    assert clip_model.file_sha256(str(checkpoint)) == hashlib.sha256(b"w" * 1000).hexdigest()
    (kept,) = (tmp_path / "cache" / "ray-photo-embeddings" / "checksums").iterdir()
    kept.write_text("f" * 64)  # what is kept is what is answered, while the file is as it was
    assert clip_model.file_sha256(str(checkpoint)) == "f" * 64
    checkpoint.write_bytes(b"v" * 1000)  # changed (its mtime moves): hashed again
    os.utime(checkpoint, ns=(1, 2))
    assert clip_model.file_sha256(str(checkpoint)) == hashlib.sha256(b"v" * 1000).hexdigest()
