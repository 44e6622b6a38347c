"""Discovery: what a walk finds, what it skips, and manifests."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_pipeline.files.listing import DiscoveryError, discover, is_streamed, read_manifest
from ray_pipeline.runs.streamed import StreamedManifest, _listed_rows

pytestmark = pytest.mark.unit


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return str(path)


def test_walk_finds_supported_extensions_in_any_case(tmp_path):
    wanted = [touch(tmp_path / name) for name in ("a.JPG", "b.jpeg", "sub/c.Png", "sub/deep/d.CR3", "e.nef", "f.RAF", "g.webp",
                                                    "phone/h.HEIC", "i.heif", "j.hif", "k.Avif")]
    for name in ("notes.txt", "clip.mp4", "noext", ".hidden.jpg", ".cache/h.jpg", "sub/.x/i.png"):
        touch(tmp_path / name)
    assert discover([str(tmp_path)]) == sorted(wanted)


def test_symlinked_folders_are_not_followed_but_symlinked_files_are(tmp_path):
    outside = tmp_path / "outside"
    touch(outside / "o.jpg")
    library = tmp_path / "library"
    touch(library / "in.jpg")
    os.symlink(outside, library / "linked")
    os.symlink(outside / "o.jpg", library / "single.jpg")
    os.symlink(library / "missing.jpg", library / "broken.jpg")
    assert discover([str(library)]) == sorted(str(library / n) for n in ("in.jpg", "single.jpg", "broken.jpg"))


def test_named_files_are_taken_and_missing_paths_refused(tmp_path):
    named = touch(tmp_path / "scan.dat")
    assert discover([named]) == [named]
    with pytest.raises(DiscoveryError, match="no such file or folder: .*missing"):
        discover([named, str(tmp_path / "missing")])


def test_text_manifest(tmp_path):
    (tmp_path / "m.txt").write_text("# comment\n\na.jpg\n/abs/b.jpg\na.jpg\n  sub/c.png  \nIMG_0001.HEIC\nd.avif\n")
    assert read_manifest(str(tmp_path / "m.txt")) == sorted([str(tmp_path / "a.jpg"), "/abs/b.jpg", str(tmp_path / "sub/c.png"),
                                                            str(tmp_path / "IMG_0001.HEIC"), str(tmp_path / "d.avif")])


def test_parquet_manifest_is_checked_from_its_footers_and_its_entries_made_absolute(tmp_path):
    """A Parquet manifest is streamed by Ray Data; here, what runs before and inside its tasks."""
    pq.write_table(pa.table({"path": ["x.jpg", "/abs/y.dng", None, ""], "other": [1, 2, 3, 4]}), tmp_path / "m.parquet")
    manifest = StreamedManifest.open(str(tmp_path / "m.parquet"))
    assert (manifest.rows, manifest.base) == (4, str(tmp_path))
    odd = b"/abs/caf\xe9 raw.dng"  # a name that is not UTF-8 is taken byte for byte
    rows = _listed_rows(pa.table({"path": pa.array([b"x.jpg", b"/abs/y.dng", None, odd, b"~/z.jpg"], pa.binary())}),
                        manifest.base, home="/home/driver")
    assert rows.column("path").to_pylist() == [os.fsencode(str(tmp_path / "x.jpg")), b"/abs/y.dng", odd, b"/home/driver/z.jpg"]
    assert rows.column("shot").to_pylist()[1:4] == [b"/abs/y", b"/abs/caf\xe9 raw", b"/home/driver/z"]  # a RAW and its JPEG share one

    shards = tmp_path / "shards"
    shards.mkdir()
    for part in range(3):
        pq.write_table(pa.table({"path": [f"p{part}_{i}.jpg" for i in range(5)]}), shards / f"part-{part}.parquet")
    assert (StreamedManifest.open(str(shards)).rows, StreamedManifest.open(str(shards)).base) == (15, str(shards))


def test_a_manifest_that_cannot_be_streamed_is_refused_with_its_name_and_reason(tmp_path):
    pq.write_table(pa.table({"file": ["x.jpg"]}), tmp_path / "bad.parquet")
    with pytest.raises(DiscoveryError, match="bad.parquet: cannot read a 'path' column"):
        StreamedManifest.open(str(tmp_path / "bad.parquet"))
    pq.write_table(pa.table({"path": [1, 2]}), tmp_path / "numbers.parquet")
    with pytest.raises(DiscoveryError, match="numbers.parquet: cannot read a 'path' column .*not file names"):
        StreamedManifest.open(str(tmp_path / "numbers.parquet"))
    (tmp_path / "text.parquet").write_text("x.jpg\n")
    with pytest.raises(DiscoveryError, match="text.parquet: cannot read a 'path' column"):
        StreamedManifest.open(str(tmp_path / "text.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiscoveryError, match="empty: the folder holds no Parquet files"):
        StreamedManifest.open(str(tmp_path / "empty"))
    with pytest.raises(DiscoveryError, match="no such manifest"):
        StreamedManifest.open(str(tmp_path / "none.parquet"))
    with pytest.raises(DiscoveryError, match="no such manifest"):
        read_manifest(str(tmp_path / "none.txt"))
    assert is_streamed(str(tmp_path / "none.parquet")) and is_streamed(str(tmp_path / "empty"))
    assert not is_streamed(str(tmp_path / "m.txt")) and not is_streamed(None)
