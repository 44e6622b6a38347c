"""People: the faces found in a collection's photos and the people they make, in two companion collections.

- `<collection>--faces`: one record per face, its vector the face's descriptor (euclidean space, so a face search is
  a Chroma query), with its photo's id and path, its box and the person it belongs to ("" for nobody).
- `<collection>--people`: one record per person, with its name (none until someone names it), its count of faces
  and the face that shows it.

A photo's own record holds `faces` (how many; 0: looked at, none) and `people` (the ids of the people in it), so
that a `person` filter is one `$contains` on the photo collection. Every change here says which photos' `people`
changed; the store writes those.

A new face joins the person of the nearest face within `SAME_PERSON`, or starts a person of its own. A regrouping
(`apply_groups`) moves only the faces of unnamed people that nobody placed by hand: a named person is never split
or merged without being asked.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.paths import recorded_path
from ray_pipeline.model.faces import SAME_PERSON, FacesFound
from ray_pipeline.records.companions import FACES_SUFFIX, PEOPLE_SUFFIX, companion_name
from ray_pipeline.records.connection import with_retries
from ray_pipeline.records.target import StoreTarget

MAX_NAME = 100  # characters in a person's name
# Face record keys.
PHOTO, PATH, PERSON, SCORE, BY_HAND = "photo", "path", "person", "score", "by_hand"
BOX = ("left", "top", "right", "bottom")
# Person record keys.
NAME, NAME_KEY, FACES, COVER = "name", "name_key", "faces", "cover"


class PeopleError(UserFacingError):
    """A person, a face or a name that cannot be used, with the field it came in ("person: ...")."""


@dataclass(frozen=True)
class FaceRecord:
    """A face as stored: its id, its photo's id and path, its box (fractions of the photo as shown), the person it
    belongs to (None: nobody), and whether someone placed it by hand."""

    id: str
    photo: str
    path: str
    box: tuple[float, float, float, float]
    score: float
    person: str | None
    by_hand: bool


@dataclass(frozen=True)
class Person:
    """A person: id, name (None until named), how many faces, and the face that shows them."""

    id: str
    name: str | None
    faces: int
    cover: FaceRecord | None


@dataclass(frozen=True)
class AllFaces:
    """Every face of a collection, for a regrouping: ids, and descriptors (float32 rows)."""

    ids: list[str]
    vectors: np.ndarray


PhotoPeople = dict[str, list[str]]  # {photo id: the ids of the people in it, sorted}; [] for none


def _person_id() -> str:
    return "person-" + uuid.uuid4().hex[:12]


def checked_name(name: str) -> str:
    """A person's name as kept: its spaces tidied; PeopleError for an empty or too long one."""
    tidy = " ".join(name.split())
    if not tidy:
        raise PeopleError("name: empty")
    if len(tidy) > MAX_NAME or any(not character.isprintable() for character in tidy):
        raise PeopleError(f"name: at most {MAX_NAME} printable characters")
    return tidy


def _face(record_id: str, metadata: dict) -> FaceRecord:
    return FaceRecord(record_id, metadata.get(PHOTO, ""), metadata.get(PATH, ""),
                      tuple(float(metadata.get(key, 0.0)) for key in BOX),  # type: ignore[arg-type]
                      float(metadata.get(SCORE, 0.0)), metadata.get(PERSON) or None, bool(metadata.get(BY_HAND)))


class PeopleBook:
    """A collection's faces and people (its two companion collections)."""

    def __init__(self, faces, people, target: StoreTarget, max_batch: int):
        self._faces, self._people = faces, people
        self._target, self._max_batch = target, max_batch

    @classmethod
    def of(cls, client, target: StoreTarget, max_batch: int, create: bool) -> PeopleBook | None:
        """The book of the target's collection; None when it has none yet and `create` is false."""
        names = (companion_name(target.collection, FACES_SUFFIX), companion_name(target.collection, PEOPLE_SUFFIX))
        if create:
            faces = with_retries(target, client.get_or_create_collection, names[0], embedding_function=None,
                                 metadata={"faces_of": target.collection}, configuration={"hnsw": {"space": "l2"}})
            people = with_retries(target, client.get_or_create_collection, names[1], embedding_function=None,
                                  metadata={"people_of": target.collection})
            return cls(faces, people, target, max_batch)
        try:
            faces, people = (client.get_collection(name, embedding_function=None) for name in names)
        except Exception:  # none yet
            return None
        return cls(faces, people, target, max_batch)

    def _call(self, member, **kwargs):
        return with_retries(self._target, member, **kwargs)

    def _get(self, collection, where: dict | None = None, ids: list[str] | None = None,
             include: Iterable[str] = ("metadatas",)) -> dict:
        """Every record matching (a page Chroma accepts at a time), as one answer."""
        found: dict = {"ids": [], "metadatas": [], "embeddings": []}
        if ids == []:
            return found
        batches = [ids[start : start + self._max_batch] for start in range(0, len(ids), self._max_batch)] if ids else [None]
        for batch in batches:
            offset = 0
            while True:
                page = self._call(collection.get, ids=batch, where=where, include=list(include),
                                  limit=self._max_batch, offset=offset)
                found["ids"] += page["ids"]
                found["metadatas"] += page["metadatas"] or []
                found["embeddings"] += list(page["embeddings"]) if page.get("embeddings") is not None else []
                if len(page["ids"]) < self._max_batch:
                    break
                offset += self._max_batch
        return found

    def _faces_where(self, where: dict) -> list[FaceRecord]:
        found = self._get(self._faces, where=where)
        return [_face(i, m or {}) for i, m in zip(found["ids"], found["metadatas"])]

    # Faces found.

    def store(self, found: dict[str, FacesFound], paths: dict[str, str]) -> PhotoPeople:
        """Each photo's faces (replacing what it had: a photo looked at again), each joined to the person of the
        nearest face within SAME_PERSON or made a person of its own; the people in each photo."""
        touched: set[str] = set()
        in_photos: PhotoPeople = {}
        for photo, result in found.items():
            old = self._faces_where({PHOTO: photo})
            if old:
                self._call(self._faces.delete, ids=[face.id for face in old])
                touched.update(face.person for face in old if face.person)
            people = []
            for index, face in enumerate(result.faces):
                person = self._nearest_person(face.descriptor) or self._new_person()
                self._call(self._faces.upsert, ids=[f"{photo}:{index}"], embeddings=[face.descriptor.tolist()],
                           metadatas=[{PHOTO: photo, PATH: paths.get(photo, ""), PERSON: person, SCORE: face.score,
                                       BY_HAND: False, **dict(zip(BOX, face.box))}])
                people.append(person)
            touched.update(people)
            in_photos[photo] = sorted(set(people))
        self._recount(touched)
        return in_photos

    def _nearest_person(self, descriptor: np.ndarray) -> str | None:
        """The person of the nearest face that has one, where it is within SAME_PERSON."""
        if self._call(self._faces.count) == 0:
            return None
        found = self._call(self._faces.query, query_embeddings=[descriptor.tolist()], n_results=1,
                           where={PERSON: {"$ne": ""}}, include=["metadatas", "distances"])
        if not found["ids"][0]:
            return None
        squared = found["distances"][0][0]  # Chroma's l2 is the squared distance
        return found["metadatas"][0][0][PERSON] if squared <= SAME_PERSON**2 else None

    def _new_person(self) -> str:
        person = _person_id()
        self._call(self._people.upsert, ids=[person], embeddings=[[1.0]], metadatas=[{FACES: 0}])
        return person

    def forget(self, photos: list[str]) -> None:
        """The faces of these photos (deleted) go; a person left with none goes too."""
        gone: list[FaceRecord] = []
        for start in range(0, len(photos), self._max_batch):
            gone += self._faces_where({PHOTO: {"$in": photos[start : start + self._max_batch]}})
        if gone:
            self._delete_faces([face.id for face in gone])
            self._recount({face.person for face in gone if face.person})

    def _delete_faces(self, ids: list[str]) -> None:
        for start in range(0, len(ids), self._max_batch):
            self._call(self._faces.delete, ids=ids[start : start + self._max_batch])

    def _recount(self, persons: Iterable[str]) -> None:
        """Each person's count of faces and cover made true again; a person with no face left goes."""
        persons = sorted(persons)
        if not persons:
            return
        faces: dict[str, list[FaceRecord]] = {person: [] for person in persons}
        for start in range(0, len(persons), self._max_batch):
            for face in self._faces_where({PERSON: {"$in": persons[start : start + self._max_batch]}}):
                faces[face.person or ""].append(face)
        known = self._get(self._people, ids=persons)
        metadata = {i: dict(m or {}) for i, m in zip(known["ids"], known["metadatas"])}
        empty = [person for person in persons if not faces[person] and person in metadata]
        if empty:
            self._call(self._people.delete, ids=empty)
        kept = [person for person in persons if faces[person]]
        for start in range(0, len(kept), self._max_batch):
            batch = kept[start : start + self._max_batch]
            updated = []
            for person in batch:
                ids = {face.id for face in faces[person]}
                cover = metadata.get(person, {}).get(COVER)
                if cover not in ids:
                    cover = max(faces[person], key=lambda face: face.score).id
                updated.append({**metadata.get(person, {}), FACES: len(ids), COVER: cover})
            self._call(self._people.upsert, ids=batch, embeddings=[[1.0]] * len(batch), metadatas=updated)

    def _people_of(self, photos: Iterable[str]) -> PhotoPeople:
        """The people in each of these photos, read from their faces."""
        photos = sorted(set(photos))
        found: PhotoPeople = {photo: [] for photo in photos}
        for start in range(0, len(photos), self._max_batch):
            for face in self._faces_where({PHOTO: {"$in": photos[start : start + self._max_batch]}}):
                if face.person and face.person not in found[face.photo]:
                    found[face.photo].append(face.person)
        return {photo: sorted(people) for photo, people in found.items()}

    # People, listed and named.

    def people(self) -> list[Person]:
        """Every person, the named ones first (by name), then by how many faces they have."""
        found = self._get(self._people)
        covers = {m.get(COVER) for m in found["metadatas"] if m and m.get(COVER)}
        faces = self._get(self._faces, ids=sorted(covers))
        cover_faces = {i: _face(i, m or {}) for i, m in zip(faces["ids"], faces["metadatas"])}
        listed = [Person(i, (m or {}).get(NAME), int((m or {}).get(FACES, 0)), cover_faces.get((m or {}).get(COVER)))
                  for i, m in zip(found["ids"], found["metadatas"])]
        return sorted(listed, key=lambda p: (p.name is None, (p.name or "").lower(), -p.faces, p.id))

    def person(self, person: str, field: str = "person") -> Person:
        """One person; PeopleError naming `field` for an unknown id."""
        for listed in self._people_by_id([person]):
            return listed
        raise PeopleError(f"{field}: no person {person!r}")

    def face(self, face_id: str) -> FaceRecord:
        """One face; PeopleError naming `face` for an unknown id."""
        found = self._get(self._faces, ids=[face_id])
        if not found["ids"]:
            raise PeopleError(f"face: no face {face_id!r}")
        return _face(face_id, found["metadatas"][0] or {})

    def faces_of(self, person: str) -> list[FaceRecord]:
        """A person's faces, the surest first."""
        self.person(person)
        return sorted(self._faces_where({PERSON: person}), key=lambda face: -face.score)

    def photos_of(self, persons: list[str], most: int) -> list[str] | None:
        """The photos of whichever of these people is in the fewest (a query of the faces collection only): those
        that hold them all are among them. None when even that person has more than `most` faces (then the photo
        collection's own filter is cheaper than reading them); [] when one of them is unknown."""
        known = self._people_by_id(list(dict.fromkeys(persons)))
        if len(known) < len(set(persons)):
            return []
        fewest = min(known, key=lambda person: person.faces)
        if fewest.faces > most:
            return None
        return sorted({(m or {}).get(PHOTO, "") for m in self._get(self._faces, where={PERSON: fewest.id})["metadatas"]})

    def _people_by_id(self, persons: list[str]) -> list[Person]:
        found = self._get(self._people, ids=persons)
        return [Person(i, (m or {}).get(NAME), int((m or {}).get(FACES, 0)), None)
                for i, m in zip(found["ids"], found["metadatas"])]

    def name(self, person: str, name: str) -> Person:
        """Give a person a name, one no other person has."""
        name = checked_name(name)
        self.person(person)
        same = self._get(self._people, where={NAME_KEY: name.lower()})
        if [i for i in same["ids"] if i != person]:
            raise PeopleError(f"name: {name!r} is the name of another person ({same['ids'][0]}): merge the two instead")
        known = self._get(self._people, ids=[person])
        self._call(self._people.update, ids=[person],
                   metadatas=[{**dict(known["metadatas"][0] or {}), NAME: name, NAME_KEY: name.lower()}])
        return self.person(person)

    def resolve(self, given: list[str]) -> list[str]:
        """The ids of people given by id or by name (any letter case); PeopleError naming `person` for one unknown."""
        ids = []
        for wanted in given:
            by_id = [person.id for person in self._people_by_id([wanted])] if wanted.startswith("person-") else []
            named = by_id or self._get(self._people, where={NAME_KEY: " ".join(wanted.split()).lower()})["ids"]
            if not named:
                raise PeopleError(f"person: no person named or numbered {wanted!r}")
            ids.append(named[0])
        return ids

    # Fixing by hand.

    def merge(self, into: str, other: str) -> PhotoPeople:
        """Every face of `other` becomes `into`'s, and `other` goes (its name passes to `into` where that has none)."""
        if into == other:
            raise PeopleError("other: a person cannot be merged into itself")
        kept, gone = self.person(into, "into"), self.person(other, "other")
        faces = self._faces_where({PERSON: other})
        self._set_person(faces, into, by_hand=False)
        if kept.name is None and gone.name is not None:
            self._call(self._people.delete, ids=[other])  # its name first, for `name` to find it free
            self.name(into, gone.name)
        self._recount([into, other])
        return self._people_of(face.photo for face in faces)

    def move(self, face_id: str, person: str | None) -> PhotoPeople:
        """A face becomes `person`'s (None: nobody's), placed by hand: no regrouping moves it again."""
        face = self.face(face_id)
        if person is not None:
            self.person(person)
        self._set_person([face], person, by_hand=True)
        self._recount({p for p in (face.person, person) if p})
        return self._people_of([face.photo])

    def _set_person(self, faces: list[FaceRecord], person: str | None, by_hand: bool) -> None:
        for start in range(0, len(faces), self._max_batch):
            batch = faces[start : start + self._max_batch]
            self._call(self._faces.update, ids=[face.id for face in batch],
                       metadatas=[{PERSON: person or "", BY_HAND: by_hand} for _ in batch])

    # Searching by a face; regrouping.

    def looks_like(self, descriptor: np.ndarray, k: int) -> list[tuple[Person, float]]:
        """The k people whose faces are nearest this descriptor, each with its nearest face's distance."""
        if self._call(self._faces.count) == 0:
            return []
        found = self._call(self._faces.query, query_embeddings=[descriptor.tolist()], n_results=max(k * 8, 16),
                           where={PERSON: {"$ne": ""}}, include=["metadatas", "distances"])
        best: dict[str, float] = {}
        for metadata, squared in zip(found["metadatas"][0], found["distances"][0]):
            best.setdefault(metadata[PERSON], float(np.sqrt(max(squared, 0.0))))
        people = {p.id: p for p in self._people_by_id(list(best))}
        return [(people[i], distance) for i, distance in list(best.items())[:k] if i in people]

    def all_faces(self) -> AllFaces:
        """Every face, with its descriptor."""
        found = self._get(self._faces, include=("embeddings",))
        return AllFaces(found["ids"], np.asarray(found["embeddings"], np.float32).reshape(len(found["ids"]), -1))

    def apply_groups(self, groups: dict[str, int]) -> PhotoPeople:
        """A regrouping's answer ({face id: group}) made true, a group being one person. A face that is a named
        person's, or was placed by hand, stays where it is, and the other faces of its group join its person; a
        group of such faces alone keeps the id most of its faces had (where no bigger group took it), else is a new
        person. People left with no face go."""
        found = self._get(self._faces, ids=list(groups))
        faces = {i: _face(i, m or {}) for i, m in zip(found["ids"], found["metadatas"])}
        named = {p.id for p in self._people_by_id(sorted({f.person for f in faces.values() if f.person})) if p.name}

        def kept(face: FaceRecord) -> bool:
            return face.by_hand or face.person in named

        members: dict[int, list[FaceRecord]] = {}
        for face_id, group in groups.items():
            if face_id in faces:
                members.setdefault(group, []).append(faces[face_id])
        used: set[str] = set(named)
        moves: list[tuple[FaceRecord, str]] = []
        for group in sorted(members, key=lambda g: -len(members[g])):
            fixed = Counter(face.person for face in members[group] if kept(face) and face.person)
            votes = Counter(face.person for face in members[group]
                            if not kept(face) and face.person and face.person not in used)
            person = (fixed or votes).most_common(1)[0][0] if (fixed or votes) else None
            person = person or _person_id()  # its record written, with its count, by `_recount`
            used.add(person)
            moves += [(face, person) for face in members[group] if not kept(face) and face.person != person]
        for start in range(0, len(moves), self._max_batch):  # in batches: a call per group took 40 s for 5,000 faces
            batch = moves[start : start + self._max_batch]
            self._call(self._faces.update, ids=[face.id for face, _ in batch],
                       metadatas=[{PERSON: person, BY_HAND: False} for _, person in batch])
        changed = [face for face, _ in moves]
        self._recount({face.person for face in changed if face.person} | (used - named))
        return self._people_of(face.photo for face in changed)


class PeopleOfStore:
    """The people members of a store (`records.store.RecordStore`): each reaches the collection's `PeopleBook`
    (`_book`) and writes the `faces` and `people` of the photos a change touches into their own records."""

    def _book(self, create: bool) -> PeopleBook | None:
        raise NotImplementedError

    def merge_metadata(self, changes: dict[str, dict]) -> None:
        raise NotImplementedError

    def records(self, ids: list[str]) -> dict[str, dict]:
        raise NotImplementedError

    def _written(self, changed: PhotoPeople) -> None:
        if changed:
            self.merge_metadata({photo: {keys.PEOPLE: people or None} for photo, people in changed.items()})

    def _existing_book(self) -> PeopleBook:
        book = self._book(create=False)
        if book is None:
            raise PeopleError("person: this collection has no people yet (ingest or enrich it with --find-faces)")
        return book

    def store_faces(self, found: dict[str, FacesFound]) -> None:
        """The faces found in these stored photos, written with the people they join; each photo's record learns
        how many faces it has (0: looked at, none) and who is in it."""
        paths = {i: recorded_path(m) or "" for i, m in self.records(list(found)).items()}
        found = {photo: faces for photo, faces in found.items() if photo in paths}  # a photo deleted meanwhile
        book = self._book(create=True)
        assert book is not None
        people = book.store(found, paths)
        self.merge_metadata({photo: {keys.FACES: len(found[photo].faces), keys.PEOPLE: people[photo] or None}
                             for photo in found})

    def forget_faces(self, photos: list[str]) -> None:
        book = self._book(create=False)
        if book is not None:
            book.forget(photos)

    def people(self) -> list[Person]:
        book = self._book(create=False)
        return book.people() if book is not None else []

    def person(self, person: str) -> Person:
        return self._existing_book().person(person)

    def name_person(self, person: str, name: str) -> Person:
        return self._existing_book().name(person, name)

    def merge_people(self, into: str, other: str) -> None:
        self._written(self._existing_book().merge(into, other))

    def move_face(self, face: str, person: str | None) -> None:
        self._written(self._existing_book().move(face, person))

    def resolve_people(self, given: list[str]) -> list[str]:
        return self._existing_book().resolve(given)

    def faces_like(self, descriptor: np.ndarray, k: int) -> list[tuple[Person, float]]:
        book = self._book(create=False)
        return book.looks_like(descriptor, k) if book is not None else []

    def face(self, face: str) -> FaceRecord:
        return self._existing_book().face(face)

    def faces_of(self, person: str) -> list[FaceRecord]:
        return self._existing_book().faces_of(person)

    def photos_of(self, persons: list[str], most: int) -> list[str] | None:
        book = self._book(create=False)
        return book.photos_of(persons, most) if book is not None else []

    def all_faces(self) -> AllFaces:
        book = self._book(create=False)
        return book.all_faces() if book is not None else AllFaces([], np.zeros((0, 128), np.float32))

    def apply_groups(self, groups: dict[str, int]) -> None:
        self._written(self._existing_book().apply_groups(groups))
