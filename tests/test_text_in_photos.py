"""The text in photos, read by the real PP-OCR models (rapidocr-onnxruntime), without Ray: photos with signs drawn
in (samples.text_photos), read upright whatever the file's orientation; bad pictures read or given a reason;
a failure on one photo leaving its record whole; and the records' words found by the filters."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.files.decode import DecodeError
from ray_pipeline.model.text_reader import TextReader, rows_of
from ray_pipeline.records.enrichments import TEXT, document_of, words_of
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.search.query import newest_first
from ray_pipeline.steps.enrich import HerePool, OwnModel, queue, run_queued
from ray_pipeline.steps.journey import DuplicateRegistry, Journey
from samples.sample_photos import real_photos, write_jpeg
from samples.text_photos import Sign, with_signs, write_shop_signs

pytestmark = pytest.mark.unit

MODEL = {"model": "tiny-clip", "weights": "test", "embedding_dim": 8}


@pytest.fixture(scope="module")
def reader() -> OwnModel:
    return OwnModel(TEXT)


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    return write_shop_signs(tmp_path_factory.mktemp("signs"))


def words(text: str) -> set[str]:
    return set(words_of(text))


def test_the_words_of_a_sign_are_read_line_by_line(reader, signs):
    street = reader(str(signs["street.jpg"]))
    assert street.split("\n") == ["Rue de Rivoli 12", "PHARMACIE"]  # the second sign turned by 8 degrees
    assert {"bakery", "open"} <= words(reader(str(signs["bakery.jpg"])))
    menu = reader(str(signs["menu.jpg"])).split("\n")
    assert menu[:2] == ["MENU", "Soup 4 EUR"]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_photo_stored_turned_is_read_upright(reader, tmp_path, orientation):
    turned = write_shop_signs(tmp_path, orientation=orientation)
    assert reader(str(turned["street.jpg"])).split("\n") == ["Rue de Rivoli 12", "PHARMACIE"]


@pytest.mark.parametrize("letters", [120, 48, 24])
def test_small_and_large_letters_are_read(reader, tmp_path, letters):
    path = tmp_path / "sign.jpg"
    write_jpeg(str(path), with_signs(real_photos()["coffee"], [Sign("GELATERIA", letters)], width=3000))
    assert "GELATERIA" in reader(str(path))


def test_a_photo_with_no_words_has_an_empty_text():
    assert TextReader().read(np.full((400, 600, 3), 128, np.uint8)) == []


def test_boxes_are_put_in_reading_order():
    def box(x, y, height=20, width=60):
        return [[x, y], [x + width, y], [x + width, y + height], [x, y + height]]

    found = [(box(200, 102), "world"), (box(10, 300), "last"), (box(10, 100), "hello"), (box(10, 200), "middle")]
    assert [[text for _, text in row] for row in rows_of(found)] == [["hello", "world"], ["middle"], ["last"]]


def bad_pictures(folder) -> dict[str, str]:
    """Pictures of every awkward kind: what each is."""
    photo = with_signs(real_photos()["coffee"], [Sign("KIOSK", 90)])
    paths = {}

    def save(name: str, image: Image.Image, **options) -> None:
        paths[name] = str(folder / name)
        image.save(paths[name], **options)

    save("tiny.png", Image.new("RGB", (1, 1)))
    save("grey.png", Image.fromarray(photo).convert("L"))
    save("sixteen.png", Image.fromarray((np.asarray(Image.fromarray(photo).convert("L"), np.uint16) * 257)).convert("I;16"))
    save("cmyk.jpg", Image.fromarray(photo).convert("CMYK"), quality=92)
    frames = [Image.fromarray(photo).convert("P"), Image.new("P", (photo.shape[1], photo.shape[0]))]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100)
    return paths


def test_awkward_pictures_are_read_as_the_embedding_reads_them(reader, tmp_path):
    paths = bad_pictures(tmp_path)
    assert reader(paths["tiny.png"]) == ""
    for name in ("grey.png", "sixteen.png", "cmyk.jpg", "animated.gif"):  # the first frame of an animation
        assert "KIOSK" in reader(paths[name]), name


def test_a_picture_over_the_pixel_limit_gets_a_reason(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("RGB", (defaults.MAX_PIXELS // 1000 + 1, 1000)).save(huge)
    with pytest.raises(DecodeError, match="pixels"):
        OwnModel(TEXT)(str(huge))


def test_the_text_pass_reads_once_reports_a_failure_and_leaves_every_record_whole(signs, tmp_path):
    """Records written, then their text read by a pool in this process: a photo that cannot be read any more
    fails with its reason and keeps its record; a photo with no words gets an empty text and is not read again;
    the words are then found by `text_words`, and not by `caption_words`."""
    blank = tmp_path / "blank.jpg"
    write_jpeg(str(blank), np.full((600, 800, 3), 200, np.uint8))
    gone = tmp_path / "gone.jpg"
    write_jpeg(str(gone), real_photos()["rocket"])
    paths = [str(signs["street.jpg"]), str(signs["bakery.jpg"]), str(blank), str(gone)]
    with opened_for_writing(StoreTarget("texts", path=str(tmp_path / "chroma")), MODEL) as store:
        files = Journey(store, DuplicateRegistry().claim, InputGeometry(64, 64), defaults.MAX_PIXELS).run(paths)
        store.upsert([f.id for f in files], np.eye(8, dtype=np.float32)[: len(files)], [f.metadata for f in files])
        os.remove(gone)
        stored = [(f.id, f.path) for f in files]
        done = run_queued(store, queue(store, (TEXT,), stored), HerePool(), Reporter(None, "texts", to_metrics=False))
        assert done.counts == {"text_read": 3}
        assert [(e.path, e.reason.split(":")[0]) for e in done.errors] == [(str(gone), "text")]
        assert "No such file" in done.errors[0].reason
        records = store.records([f.id for f in files])
        by_path = {m["path"]: m for m in records.values()}
        assert by_path[str(blank)]["text"] == "" and "text" not in by_path[str(gone)]
        assert len(records) == 4  # the failed photo's record is whole: only its text is missing
        assert [q.records for q in queue(store, (TEXT,), stored)] == [[(files[3].id, str(gone))]]  # only it, again
        assert " t:pharmacie " in document_of(by_path[str(signs["street.jpg"])])
        found = newest_first(store, 10, SearchFilters.parse({"text_words": "Rivoli pharmacie"})).results
        assert [r["path"] for r in found] == [str(signs["street.jpg"])]
        assert found[0]["text"] == "Rue de Rivoli 12\nPHARMACIE"
        assert newest_first(store, 10, SearchFilters.parse({"caption_words": "pharmacie"})).results == []
