"""Hostile bytes: random and mutated files never crash the decode stage, and huge photos stay small in
memory."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.files.decode import DecodeError, decode_file
from ray_pipeline.files.reading import FileBytes
from samples.sample_photos import real_photos, write_dng

pytestmark = pytest.mark.unit

GEOMETRY = InputGeometry(224, 224)
NAMES = ["x.jpg", "x.png", "x.tiff", "x.webp", "x.gif", "x.bmp", "x.dng", "x.nef", "x.cr3"]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> list[bytes]:
    """Small valid files of each kind, to mutate."""
    photo = real_photos()["coffee"][:96, :128]
    out = []
    for fmt in ("JPEG", "PNG", "TIFF", "WEBP", "GIF", "BMP"):
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, fmt)
        out.append(buffer.getvalue())
    dng = tmp_path_factory.mktemp("dng") / "s.dng"
    write_dng(str(dng), photo)
    return out + [dng.read_bytes()]


def decodes_or_says_why(name: str, data: bytes) -> None:
    try:
        photo = decode_file(FileBytes(name, data, len(data), 0.0), GEOMETRY, 50_000_000)
    except DecodeError as exc:
        assert str(exc)
    else:
        assert photo.pixels.shape == (224, 224, 3) and photo.pixels.dtype == np.uint8


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(NAMES), data=st.binary(max_size=4096))
def test_random_bytes(name, data):
    decodes_or_says_why(name, data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(NAMES), which=st.integers(0, 6), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=12))
def test_mutated_real_files(seeds, name, which, cut, flips):
    data = bytearray(seeds[which][: max(1, int(len(seeds[which]) * (0.5 + cut / 2)))])
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    decodes_or_says_why(name, bytes(data))


def test_a_100_megapixel_jpeg_decodes_in_little_memory(tmp_path):
    """Draft decoding reads it at 1/8 scale: a full decode would need 300 MB for the pixels alone."""
    big = tmp_path / "big.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (625, 625, 3), dtype=np.uint8)
    Image.fromarray(noise).resize((10_000, 10_000), Image.Resampling.NEAREST).save(big, quality=80)
    probe = (
        "import json, resource, sys; sys.path.insert(0, '.');"
        "from ray_pipeline.core.geometry import InputGeometry; from ray_pipeline.files.decode import decode_file; from ray_pipeline.files.reading import read_file;"
        "file = read_file(sys.argv[1]); before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "photo = decode_file(file, InputGeometry(224, 224), 250_000_000);"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "print(json.dumps({'grew_kb': after - before, 'width': photo.width, 'shape': list(photo.pixels.shape)}))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(big)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["width"] == 10_000 and result["shape"] == [224, 224, 3]
    assert result["grew_kb"] < 60_000, result  # far below the 300 MB a full-size decode would take
