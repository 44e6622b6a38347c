"""People through the CLI as a user runs it, with no Ray cluster, with dlib's real models on real photos of two
people (Eileen Collins and Grace Hopper, `samples.face_photos`): faces found after the records are written, the
same face across crops, sizes, a mirror image, a small rotation, an EXIF orientation and 16-bit grayscale taken for
one person, the two for two; photos without faces have none. Naming, merging, moving a face, regrouping, the
`person` filter, a search by a photo of a face, and a prune that takes a deleted photo's faces away."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from test_search_cli import run

from ray_pipeline.model.faces import SAME_PERSON, FaceFinder
from ray_pipeline.records.enrichments import FACES
from ray_pipeline.steps.enrich import picture_for
from ray_pipeline.steps.summary import summary_in
from samples.face_photos import EILEEN, GRACE, write_faces

COLLECTION = "people"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces") / "photos"
    return folder, write_faces(folder)


def test_the_same_face_is_near_itself_and_far_from_another_person(faces):
    folder, written = faces
    finder = FaceFinder()
    found = {name: finder.find(picture_for(FACES, str(folder / name))) for name in written}
    assert {name: len(result.faces) for name, result in found.items()} == {name: len(who) for name, who in written.items()}
    eileen, grace = found["eileen.jpg"].faces[0].descriptor, found["grace.jpg"].faces[0].descriptor
    for name, who in written.items():
        for face, person in zip(sorted(found[name].faces, key=lambda face: face.box[0]), who):  # left to right
            mine, other = (eileen, grace) if person == EILEEN else (grace, eileen)
            assert np.linalg.norm(face.descriptor - mine) < SAME_PERSON / 2, name
            assert np.linalg.norm(face.descriptor - other) > SAME_PERSON, name
    # Boxes are of the photo as shown: the photo stored on its side (EXIF 6) has its face where the upright one has.
    assert np.allclose(found["eileen_rotated.jpg"].faces[0].box, found["eileen.jpg"].faces[0].box, atol=0.03)


def cli(chroma, *args, ok: bool = True):
    completed = run(*args, "--collection", COLLECTION, "--chroma-path", chroma)
    if ok:
        assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def people(chroma) -> list[dict]:
    return json.loads(cli(chroma, "people", "list", "--json").stdout)["people"]


def browse(chroma, *filters) -> list[str]:
    found = json.loads(cli(chroma, "browse", "-k", "50", "--json", *filters).stdout)["results"]
    return sorted(result["path"].rsplit("/", 1)[1] for result in found)


def whose(written: dict, person: str) -> list[str]:
    return sorted(name for name, who in written.items() if person in who)


def test_people_found_named_merged_moved_filtered_and_pruned(faces, tiny_model_args, tmp_path):
    source, written = faces
    photos = tmp_path / "photos"
    shutil.copytree(source, photos)
    chroma = tmp_path / "chroma"
    ingested = cli(chroma, "ingest", photos, "--find-faces", *tiny_model_args)
    summary = summary_in(ingested.stdout)
    assert (summary["embedded"], summary["looked_for_faces"], summary["faces"], summary["failed"]) == (12, 12, 10, 0)
    again = summary_in(cli(chroma, "ingest", photos, "--find-faces", *tiny_model_args).stdout)
    assert again.get("looked_for_faces", 0) == 0  # every photo was looked at: none twice

    listed = people(chroma)
    assert sorted(person["faces"] for person in listed) == [5, 5] and all(p["name"] is None for p in listed)
    by_cover = {person["cover"]["path"].rsplit("/", 1)[1].split("_")[0].split(".")[0]: person for person in listed}
    eileen, grace = by_cover.get("eileen") or by_cover["together"], by_cover.get("grace") or by_cover["together"]
    assert eileen["id"] != grace["id"]
    assert browse(chroma, "--person", eileen["id"]) == whose(written, EILEEN)
    assert browse(chroma, "--person", grace["id"]) == whose(written, GRACE)
    assert "coffee.jpg" not in browse(chroma, "--person", eileen["id"])

    # Names: any letter case finds them; several people mean all of them in one photo.
    assert "is Eileen Collins" in cli(chroma, "people", "name", eileen["id"], "  Eileen   Collins ").stdout
    cli(chroma, "people", "name", grace["id"], "Grace")
    assert browse(chroma, "--person", "eileen collins") == whose(written, EILEEN)
    assert browse(chroma, "--person", "Eileen Collins,grace") == ["together.jpg"]
    text = json.loads(cli(chroma, "search", "a portrait", "-k", "20", "--json", "--person", "Grace").stdout)["results"]
    assert sorted(result["path"].rsplit("/", 1)[1] for result in text) == whose(written, GRACE)

    # A photo of a face: the people it looks like, nearest first.
    like = json.loads(cli(chroma, "people", "like", "--image", photos / "grace_small.jpg", "--json").stdout)["faces"]
    assert [(face["people"][0]["name"], face["people"][0]["same_person"]) for face in like] == [("Grace", True)]
    assert like[0]["people"][1]["name"] == "Eileen Collins" and not like[0]["people"][1]["same_person"]

    # Regrouping never splits or merges a named person, and keeps their ids.
    regrouped = json.loads(cli(chroma, "people", "regroup").stdout.strip().splitlines()[-1])
    assert (regrouped["faces"], regrouped["people"], regrouped["named"]) == (10, 2, 2)
    assert {(p["id"], p["name"], p["faces"]) for p in people(chroma)} == {
        (eileen["id"], "Eileen Collins", 5), (grace["id"], "Grace", 5)}

    # A face moved to nobody leaves its person and its photo's people.
    edge_face = next(line.split()[0] for line in cli(chroma, "people", "faces", "Grace").stdout.splitlines()
                     if "grace_at_edge.jpg" in line)
    cli(chroma, "people", "move", edge_face, "--nobody")
    assert "grace_at_edge.jpg" not in browse(chroma, "--person", "Grace")
    assert {p["name"]: p["faces"] for p in people(chroma)}["Grace"] == 4
    cli(chroma, "people", "move", edge_face, "Grace")
    assert "grace_at_edge.jpg" in browse(chroma, "--person", "Grace")

    # Merging: the faces of one become the other's; the one merged goes.
    cli(chroma, "people", "merge", "Eileen Collins", "Grace")
    assert [(p["name"], p["faces"]) for p in people(chroma)] == [("Eileen Collins", 10)]
    assert set(browse(chroma, "--person", "Eileen Collins")) == set(whose(written, EILEEN)) | set(whose(written, GRACE))

    # A prune takes a deleted photo's faces with its record; a person with no face left goes.
    for name in set(whose(written, GRACE) + whose(written, EILEEN)):
        (photos / name).unlink()
    pruned = summary_in(cli(chroma, "ingest", photos, "--prune", *tiny_model_args).stdout)
    assert pruned["removed"] == 9
    assert people(chroma) == []


def test_bad_names_people_and_faces_are_refused_naming_the_field(faces, tiny_model_args, tmp_path):
    source, _ = faces
    chroma = tmp_path / "chroma"
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(source / "eileen.jpg", photos)
    shutil.copy(source / "coffee.jpg", photos)
    nobody_yet = cli(chroma, "ingest", photos, *tiny_model_args)
    assert summary_in(nobody_yet.stdout)["embedded"] == 2
    unknown = cli(chroma, "browse", "--person", "Eileen", ok=False)
    assert unknown.returncode == 2 and "person: this collection has no people yet" in unknown.stderr

    shutil.copy(source / "chelsea.jpg", photos)
    assert summary_in(cli(chroma, "ingest", photos, *tiny_model_args).stdout)["embedded"] == 1
    (photos / "chelsea.jpg").write_bytes(b"\xff\xd8 no longer a photo")  # broken since it was stored
    enriched = cli(chroma, "enrich", "--find-faces")  # a collection ingested without faces
    summary = json.loads(enriched.stdout.strip().splitlines()[-1])
    assert (summary["records"], summary["looked_for_faces"], summary["faces"], summary["failed"]) == (3, 2, 1, 1)
    assert "failed: " in enriched.stderr and "chelsea.jpg: faces: " in enriched.stderr
    assert len(json.loads(cli(chroma, "browse", "--json").stdout)["results"]) == 3  # its record kept
    (person,) = people(chroma)
    for args, said in [(("people", "name", person["id"], "   "), "name: empty"),
                       (("people", "name", person["id"], "x" * 101), "name: at most 100"),
                       (("people", "name", "person-000000000000", "Anna"), "person: no person named or numbered"),
                       (("people", "merge", person["id"], person["id"]), "other: a person cannot be merged into itself"),
                       (("people", "move", "no-such-face", "--nobody"), "face: no face 'no-such-face'"),
                       (("browse", "--person", "Nobody Known"), "person: no person named or numbered 'Nobody Known'")]:
        refused = cli(chroma, *args, ok=False)
        assert refused.returncode == 2 and said in refused.stderr, (args, refused.stderr[-500:])
    neither = cli(chroma, "people", "move", "some-face", ok=False)
    assert neither.returncode == 2 and "give the PERSON the face goes to, or --nobody" in neither.stderr
    empty = cli(chroma, "browse", "--person", ",", ok=False)
    assert empty.returncode == 2 and "--person" in empty.stderr
