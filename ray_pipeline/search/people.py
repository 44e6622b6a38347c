"""People, as searches and listings show them: a person's JSON, and the people a photo of a face looks like."""

from __future__ import annotations

from dataclasses import dataclass

from ray_pipeline.model.faces import SAME_PERSON, FacesFound
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.people import FaceRecord, Person
from ray_pipeline.records.store import RecordStore

LIKE_MAX = 5  # people shown per face of a photo searched by
# A `person` filter one of whose people has at most this many faces: that person's photos are read by id, found
# from their faces, instead of Chroma weighing a `$contains` over the whole photo collection (about 130 ms at 10^5
# records). Reading photos with their vectors costs about 0.2 ms each: 400 take 80 ms, 24 take 30 ms with the
# faces' query (benchmarks/RESULTS.md, issue 31).
PEOPLE_DIRECT = 400


def face_json(face: FaceRecord) -> dict:
    return {"id": face.id, "photo": face.photo, "path": face.path, "box": list(face.box), "person": face.person}


def person_json(person: Person) -> dict:
    """{id, name (null until named), faces, cover: the face that shows them}."""
    return {"id": person.id, "name": person.name, "faces": person.faces,
            "cover": face_json(person.cover) if person.cover else None}


@dataclass(frozen=True)
class FaceMatch:
    """A face of the photo searched by, and the people it looks like, nearest first (distance in the descriptor's
    space; under SAME_PERSON, taken for the same person)."""

    box: tuple[float, float, float, float]
    people: list[tuple[Person, float]]

    def as_json(self) -> dict:
        return {"box": list(self.box),
                "people": [{**person_json(person), "distance": round(distance, 4), "same_person": distance < SAME_PERSON}
                           for person, distance in self.people]}


def photos_of_people(store: RecordStore, filters: SearchFilters) -> list[str] | None:
    """Photos among which are all that a `person` filter (of ids) lets through, read from the people's faces (the
    caller checks each with `admits`); None where there is no such filter, or its people are in too many photos
    for reading them to pay."""
    return store.photos_of(filters.person, PEOPLE_DIRECT) if filters.person else None


def people_like(store: RecordStore, found: FacesFound, k: int = LIKE_MAX) -> list[FaceMatch]:
    """For each face found in a photo, the k people of the collection it looks most like."""
    return [FaceMatch(face.box, store.faces_like(face.descriptor, k)) for face in found.faces]
