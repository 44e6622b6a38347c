"""The app's models (`CLIP_MODEL`, and `CLIP_EXTRA_MODELS`: the session's app runs a second tiny model), collections
created with one of them and the enrichments on by default, and reindexed into another by a Ray job, over HTTP."""

from __future__ import annotations

import requests
from serve_app import auth, wait_job

from samples.face_photos import write_faces


def upload(service, folder, names: list[str], collection: str, **fields) -> dict:
    files = [("files", (name, (folder / name).read_bytes(), "image/jpeg")) for name in names]
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                             files=files, data={"collection": collection, **fields}, timeout=300)
    assert response.status_code == 200, response.text
    return wait_job(service, response.json()["job_id"])


def get(service, path: str, **params) -> requests.Response:
    return requests.get(f"{service['url']}{path}", params=params, headers=auth(service), timeout=60)


def post(service, path: str, body: dict) -> requests.Response:
    return requests.post(f"{service['url']}{path}", json=body, headers=auth(service), timeout=120)


def search(service, collection: str) -> requests.Response:
    return post(service, "/search", {"collection": collection, "text": "a woman", "k": 5})


def test_a_collection_of_the_second_model_with_faces_on(service, tmp_path):
    models = get(service, "/models").json()["models"]
    assert [model["default"] for model in models] == [True, False]
    second = models[1]["name"]

    made = post(service, "/collections", {"name": "second-model", "model": second, "find_faces": True})
    assert made.status_code == 201, made.text
    assert (made.json()["records"], made.json()["enrichments_on"]) == (0, ["faces"])
    assert post(service, "/collections", {"name": "second-model"}).status_code == 422  # taken
    unknown = post(service, "/collections", {"name": "third-model", "model": "ViT-B-32@openai"})
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("model: this app runs no model")
    assert get(service, "/collections/third-model").status_code == 404  # nothing made

    write_faces(tmp_path)
    done = upload(service, tmp_path, ["eileen.jpg"], "second-model")  # no find_faces asked: the collection has it on
    assert (done["status"], done["embedded"], done["looked_for_faces"], done["faces"]) == ("SUCCEEDED", 1, 1, 1), done
    found = search(service, "second-model")  # by the second model's Embedder: the default one's would be a 409
    assert found.status_code == 200 and found.json()["results"][0]["name"] == "eileen.jpg", found.text
    default = {entry["name"]: entry for entry in get(service, "/collections").json()["collections"]}
    assert default["second-model"]["weights"] != default.get("shoots", {}).get("weights", "")


def test_reindex_into_the_second_model(service, tmp_path):
    write_faces(tmp_path)
    done = upload(service, tmp_path, ["eileen.jpg", "coffee.jpg"], "to-reindex", find_faces="true")
    assert done["embedded"] == 2
    before = {result["id"]: result for result in search(service, "to-reindex").json()["results"]}
    old = get(service, "/collections/to-reindex").json()
    second = get(service, "/models").json()["models"][1]["name"]

    assert post(service, "/collections/no-such/reindex", {"model": second}).status_code == 404
    refused = post(service, "/collections/to-reindex/reindex", {"model": "ViT-B-32@openai"})
    assert refused.status_code == 422 and "model: this app runs no model" in refused.text
    started = post(service, "/collections/to-reindex/reindex", {"model": second})
    assert started.status_code == 202, started.text
    busy = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), timeout=60,
                         files=[("files", ("grace.jpg", (tmp_path / "grace.jpg").read_bytes(), "image/jpeg"))],
                         data={"collection": "to-reindex"})
    assert busy.status_code == 409 and "collection: 'to-reindex' is being reindexed" in busy.text, busy.text
    finished = wait_job(service, started.json()["job_id"], timeout=600)
    assert finished["status"] == "SUCCEEDED" and finished["collection"] == "to-reindex", finished
    assert (finished["reindex"]["reindexed"], finished["reindex"]["left_out"]) == (2, 0), finished

    new = get(service, "/collections/to-reindex").json()
    assert new["weights"] != old["weights"] and (new["records"], new["faces"], new["people"]) == (2, 1, 1)
    after = {result["id"]: result for result in search(service, "to-reindex").json()["results"]}
    assert set(after) == set(before)
    for record_id, result in after.items():  # the same paths and upload names; scores of another model
        assert (result["path"], result.get("name")) == (before[record_id]["path"], before[record_id].get("name"))
    assert [round(r["score"], 4) for r in after.values()] != [round(before[i]["score"], 4) for i in after]
    listed = {entry["name"]: entry for entry in get(service, "/collections").json()["collections"]}
    previous = finished["reindex"]["previous"]
    assert listed[previous]["count"] == 2 and listed[previous]["weights"] == old["weights"]
    same = post(service, "/collections/to-reindex/reindex", {"model": second})
    assert same.status_code == 422 and "holds vectors of that very model already" in same.text
    entries = get(service, "/audit").json()["entries"]
    assert any(entry["action"] == "reindex" and entry["collection"] == "to-reindex" for entry in entries)
