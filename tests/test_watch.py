"""`watch` on real folders against the session's Ray head: photos copied in are found, copies and edits
follow their files, deletions leave (but never all at once, as an unmounted disk would have it), a burst
goes through the Ray Data job, and SIGINT or SIGTERM end it with the summary. Once under watchdog's real observer (inotify), once with --poll."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, summary_line, wait_for
from PIL import Image

pytestmark = pytest.mark.usefixtures("ray_head")


@pytest.fixture(scope="module")
def photos():
    from samples.sample_photos import real_photos

    return real_photos()


def write_photo(path: Path, picture: np.ndarray) -> Path:
    """Written elsewhere, then moved in: the file appears whole, as a copy from a camera card ends."""
    staging = path.parent.parent / f".staging-{path.name}"
    Image.fromarray(picture).save(staging, "JPEG", quality=90)
    os.replace(staging, path)
    return path


class Watch:
    """`python -m ray_pipeline watch` running in the background, its output in files."""

    def __init__(self, folder: Path, work: Path, env: dict, args: list[str]):
        self.collection, self.chroma = "watched", work / "chroma"
        self.out, self.err = work / "watch.out", work / "watch.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ray_pipeline", "watch", str(folder), "--collection", self.collection,
                 "--chroma-path", str(self.chroma), "--settle", "0.5", *args],
                env={**os.environ, "PYTHONPATH": str(ROOT), **env}, cwd=work, stdout=out, stderr=err)
        wait_for(lambda: "watching" in self.log() or self.process.poll() is not None, timeout=180, what="the watch to start")
        assert self.process.poll() is None, self.log()[-3000:]

    def log(self) -> str:
        return self.err.read_text()

    def records(self) -> dict[str, str]:
        """{path: id} of the collection, read while the watch writes it."""
        import chromadb

        found = chromadb.PersistentClient(path=str(self.chroma)).get_collection(self.collection).get(include=["metadatas"])
        return {metadata["path"]: record_id for record_id, metadata in zip(found["ids"], found["metadatas"])}

    def wait_for_records(self, wanted, what: str, timeout: float = 60) -> dict[str, str]:
        return wait_for(lambda: (lambda records: records if wanted(records) else None)(self.records()), timeout,
                        what=f"{what}; log: {self.log()[-1500:]}")

    def stop(self, sig: int) -> dict:
        self.process.send_signal(sig)
        assert self.process.wait(timeout=60) == 0, self.log()[-3000:]
        return summary_line(self.out.read_text())


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_watch_follows_a_folder_under_a_real_observer(ray_head, tmp_path, photos, tiny_model_args):
    folder = tmp_path / "photos"
    folder.mkdir()
    keeper = write_photo(folder / "keeper.jpg", photos["coffee"])
    watch = Watch(folder, tmp_path, ray_head["env"], tiny_model_args)
    try:
        assert watch.records() == {str(keeper): sha256_of(keeper)}  # ingested first, as `ingest` does

        new = write_photo(folder / "new.jpg", photos["astronaut"])
        astronaut = sha256_of(new)
        watch.wait_for_records(lambda r: r.get(str(new)) == astronaut, "a photo copied in to be stored")

        # A copy, then the original deleted: the record follows the copy, nothing is lost.
        copy = folder / "copy.jpg"
        shutil.copyfile(new, copy)
        new.unlink()
        watch.wait_for_records(lambda r: r.get(str(copy)) == astronaut and str(new) not in r, "the record to follow its copy")

        # An edit in place: the new bytes get a record, the old one goes.
        old_keeper = sha256_of(keeper)
        write_photo(keeper, photos["rocket"])
        records = watch.wait_for_records(lambda r: r.get(str(keeper)) == sha256_of(keeper), "the edited photo")
        assert old_keeper not in records.values()

        # A folder moved in brings its photos; a deletion takes its record out.
        arriving = tmp_path / "arriving"
        arriving.mkdir()
        chelsea = write_photo(arriving / "chelsea.jpg", photos["chelsea"])
        chelsea_id = sha256_of(chelsea)
        os.rename(arriving, folder / "arrived")
        copy.unlink()
        records = watch.wait_for_records(
            lambda r: r.get(str(folder / "arrived/chelsea.jpg")) == chelsea_id and astronaut not in r.values(),
            "the moved-in folder's photo in, the deleted photo out")
        assert set(records) == {str(keeper), str(folder / "arrived/chelsea.jpg")}
        assert "removed: " + str(copy) in watch.log()

        # Every photo gone at once, as an unmounted disk looks: the records stay, and the log says why.
        keeper.unlink()
        shutil.rmtree(folder / "arrived")
        wait_for(lambda: "kept every record under" in watch.log(), timeout=60, what="the refusal")
        assert "the folder holds no photos, while the collection holds 2 records under it" in watch.log()
        assert watch.records() == records
        summary = watch.stop(signal.SIGTERM)
    finally:
        if watch.process.poll() is None:
            watch.process.kill()
    assert summary["collection"] == "watched"
    assert summary["removed"] == 2  # the astronaut (deleted) and the keeper's old bytes (edited), no more
    assert summary["embedded"] == 4  # keeper, astronaut, the keeper's new bytes, chelsea
    assert summary["failed"] == 0


def test_watch_by_polling_takes_a_burst_through_the_ray_data_job(ray_head, tmp_path, photos, tiny_model_args):
    """--poll for file systems that send no events; more files than --inline-max-files at once go
    through the Ray Data job, and none is lost. Ctrl-C ends it with the summary."""
    folder = tmp_path / "photos"
    folder.mkdir()
    write_photo(folder / "first.jpg", photos["coffee"])
    watch = Watch(folder, tmp_path, ray_head["env"], [*tiny_model_args, "--poll", "0.5", "--inline-max-files", "4"])
    try:
        burst = folder / "burst"
        staging = tmp_path / "staging"
        staging.mkdir()
        rng = np.random.default_rng(0)
        for i in range(10):  # ten distinct crops of one photo
            top, left = rng.integers(0, 200, 2)
            write_photo(staging / f"crop{i}.jpg", np.ascontiguousarray(photos["astronaut"][top:top + 256, left:left + 256]))
        os.rename(staging, burst)
        watch.wait_for_records(lambda r: len(r) == 11, "all ten photos of the burst", timeout=180)
        assert "route: ray_data (a burst of 10 files to read" in watch.log()
        (burst / "crop3.jpg").unlink()
        watch.wait_for_records(lambda r: len(r) == 10 and str(burst / "crop3.jpg") not in r, "the deleted photo out")
        summary = watch.stop(signal.SIGINT)
    finally:
        if watch.process.poll() is None:
            watch.process.kill()
    assert (summary["embedded"], summary["removed"], summary["failed"]) == (11, 1, 0)
