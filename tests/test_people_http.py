"""People through the Serve app: an upload with `find_faces` has its faces found by the FaceFinder deployment (which
goes 0 -> 1 -> 0) after its records are stored; the people listed with their face thumbnails, named, merged and a
face moved over HTTP, with a 422 naming the field for what cannot be done; the `person` filter in searches and
listings; the people a photo of a face looks like; a folder over the inline limit has its faces found by the Ray
job's own actors."""

from __future__ import annotations

import io
import json
import shutil

import pytest
import requests
from conftest import wait_for
from photo_cases import sha256_of
from PIL import Image
from serve_app import IDLE_SECONDS, INLINE_MAX_FILES, auth, running_replicas, wait_job

from samples.face_photos import EILEEN, GRACE, write_faces
from samples.sample_photos import write_many

COLLECTION = "faces-http"


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces-http")
    return folder, write_faces(folder)


def url(service, path: str) -> str:
    return f"{service['url']}/collections/{COLLECTION}/{path}"


def post(service, path: str, body: dict) -> requests.Response:
    return requests.post(url(service, path), headers=auth(service), json=body, timeout=60)


def people(service) -> list[dict]:
    response = requests.get(url(service, "people"), headers=auth(service), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["people"]


def names_of(results: list[dict], faces) -> list[str]:
    folder, written = faces
    by_id = {sha256_of(folder / name): name for name in written}
    return sorted(by_id[result["id"]] for result in results)


def whose(faces, person: str) -> list[str]:
    return sorted(name for name, who in faces[1].items() if person in who)


@pytest.fixture(scope="module")
def uploaded(service, ray_head, faces):
    """The photos uploaded with `find_faces`, their faces found by the FaceFinder, which starts for them."""
    wait_for(lambda: running_replicas(service, ray_head, "FaceFinder") == 0, timeout=IDLE_SECONDS + 60,
             what="the face finder at zero")
    folder, written = faces
    files = [("files", (name, (folder / name).read_bytes(), "image/jpeg")) for name in written]
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                             files=files, data={"collection": COLLECTION, "find_faces": "true"}, timeout=300)
    assert response.status_code == 200, response.text
    done = wait_job(service, response.json()["job_id"])
    assert (done["status"], done["embedded"], done["looked_for_faces"], done["faces"]) == ("SUCCEEDED", 12, 12, 10), done["errors"]
    return done


def test_the_face_finder_scales_from_zero_and_back(service, ray_head, uploaded):
    wait_for(lambda: running_replicas(service, ray_head, "FaceFinder") == 0, timeout=IDLE_SECONDS + 60,
             what="the face finder back at zero")


@pytest.fixture(scope="module")
def named(service, faces, uploaded) -> dict[str, str]:
    """The two people, told apart by their photos (the person filter by id), named over HTTP: {name: id}."""
    by_photos = {}
    for person in people(service):
        found = requests.get(url(service, "photos"), params={"person": person["id"], "k": 50}, headers=auth(service),
                             timeout=60).json()["results"]
        by_photos[tuple(names_of(found, faces))] = person["id"]
    assert set(by_photos) == {tuple(whose(faces, EILEEN)), tuple(whose(faces, GRACE))}
    ids = {"Eileen": by_photos[tuple(whose(faces, EILEEN))], "Grace": by_photos[tuple(whose(faces, GRACE))]}
    for name, person in ids.items():
        answer = post(service, f"people/{person}/name", {"name": name})
        assert answer.status_code == 200 and answer.json()["name"] == name, answer.text
    return ids


def test_people_are_listed_with_their_faces_and_filtered_by_name(service, faces, named):
    listed = people(service)
    assert [(person["name"], person["faces"]) for person in listed] == [("Eileen", 5), ("Grace", 5)]
    for person in listed:
        thumbnail = requests.get(url(service, f"faces/{person['cover']['id']}/thumbnail"), params={"size": 96},
                                 headers=auth(service), timeout=60)
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumbnail.content)).size == (96, 96)
    text = requests.post(f"{service['url']}/search", headers=auth(service), timeout=60,
                         json={"collection": COLLECTION, "text": "a person", "k": 20, "person": ["grace"]})
    assert text.status_code == 200, text.text
    assert names_of(text.json()["results"], faces) == whose(faces, GRACE)
    both = requests.get(url(service, "photos"), params={"person": "Eileen,Grace"}, headers=auth(service), timeout=60)
    assert names_of(both.json()["results"], faces) == ["together.jpg"]

    folder, _ = faces
    with open(folder / "grace_small.jpg", "rb") as photo:
        like = requests.post(url(service, "people/like"), headers=auth(service), files={"file": photo}, timeout=120)
    assert like.status_code == 200, like.text
    (face,) = like.json()["faces"]
    assert (face["people"][0]["name"], face["people"][0]["same_person"]) == ("Grace", True)


def test_naming_merging_and_moving_refuse_what_cannot_be_done(service, named):
    person = named["Eileen"]
    for path, body, field in [(f"people/{person}/name", {"name": ""}, "name"),
                              (f"people/{person}/name", {"name": "x" * 101}, "name"),
                              (f"people/{person}/name", {"name": "   "}, "name: empty"),
                              ("people/person-000000000000/name", {"name": "Anna"}, "person: no person"),
                              ("people/merge", {"into": person, "other": person}, "other: a person cannot be merged"),
                              ("people/merge", {"into": person, "other": "person-000000000000"}, "other: no person"),
                              ("faces/nothing-here/person", {"person": None}, "face: no face"),
                              ("faces/nothing-here/person", {}, "person")]:
        refused = post(service, path, body)
        assert refused.status_code == 422 and field in refused.text, (path, body, refused.text)
    unknown = requests.post(f"{service['url']}/search", headers=auth(service), timeout=60,
                            json={"collection": COLLECTION, "text": "x", "person": ["Nobody Known"]})
    assert unknown.status_code == 422 and "person: no person named or numbered 'Nobody Known'" in unknown.text


def test_a_face_moved_and_people_merged_over_http(service, named):
    ids = named
    grace_faces = requests.get(url(service, f"people/{ids['Grace']}/faces"), headers=auth(service), timeout=60).json()["faces"]
    assert len(grace_faces) == 5
    regrouped = post(service, "people/regroup", {})
    assert regrouped.status_code == 200 and (regrouped.json()["people"], regrouped.json()["named"]) == (2, 2), regrouped.text
    assert {p["name"]: p["faces"] for p in people(service)} == {"Eileen": 5, "Grace": 5}
    moved = post(service, f"faces/{grace_faces[-1]['id']}/person", {"person": None})
    assert moved.status_code == 200 and moved.json()["person"] is None, moved.text
    assert {p["name"]: p["faces"] for p in people(service)} == {"Eileen": 5, "Grace": 4}
    merged = post(service, "people/merge", {"into": ids["Eileen"], "other": ids["Grace"]})
    assert merged.status_code == 200 and merged.json()["faces"] == 9, merged.text
    assert [(p["name"], p["faces"]) for p in people(service)] == [("Eileen", 9)]
    found = requests.get(url(service, "photos"), params={"person": "Eileen", "k": 50}, headers=auth(service), timeout=60)
    assert len(found.json()["results"]) == 8  # together.jpg holds both: one photo


def test_a_folder_over_the_inline_limit_has_its_faces_found_by_the_jobs_own_actors(service, faces):
    folder = service["allowed"] / "faces-job"
    write_many(str(folder), INLINE_MAX_FILES)
    for name in ("eileen.jpg", "grace.jpg", "together.jpg"):
        shutil.copy(faces[0] / name, folder / name)
    response = requests.post(f"{service['url']}/ingest", headers=auth(service), timeout=60,
                             json={"paths": [str(folder)], "collection": "faces-job", "find_faces": True})
    assert response.status_code == 202, response.text
    done = wait_job(service, response.json()["job_id"], timeout=600)
    assert done["route"]["kind"] == "ray_job", done
    assert (done["status"], done["looked_for_faces"], done["faces"]) == ("SUCCEEDED", INLINE_MAX_FILES + 3, 4), done
    listed = requests.get(f"{service['url']}/collections/faces-job/people", headers=auth(service), timeout=60).json()
    assert sorted(person["faces"] for person in listed["people"]) == [2, 2]


def test_a_regrouping_on_the_cluster_makes_its_graph_with_ray_tasks(cli, faces, tiny_model_args, tmp_path):
    """`people regroup` under the cluster, its graph made by Ray tasks (--in-process-max 0), as a large collection's
    is: the same two people, named ones untouched."""
    chroma = str(tmp_path / "chroma")
    store = ["--collection", "regrouped", "--chroma-path", chroma]
    ingested = cli("ingest", str(faces[0]), "--find-faces", "--inline-max-files", "100", *store, *tiny_model_args)
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    listed = json.loads(cli("people", "list", "--json", *store).stdout)["people"]
    named = cli("people", "name", listed[0]["id"], "Someone", *store)
    assert named.returncode == 0, named.stderr[-2000:]
    regrouped = cli("people", "regroup", "--in-process-max", "0", *store)
    assert regrouped.returncode == 0, regrouped.stderr[-3000:]
    summary = json.loads(regrouped.stdout.strip().splitlines()[-1])
    assert (summary["grouped_by"], summary["faces"], summary["people"], summary["named"]) == ("ray tasks", 10, 2, 1)
    after = json.loads(cli("people", "list", "--json", *store).stdout)["people"]
    assert {(p["id"], p["faces"]) for p in after} == {(p["id"], p["faces"]) for p in listed}
