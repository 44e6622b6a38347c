"""Grouping faces into people, with no Ray: the graph of near faces and Chinese whispers on descriptors made in the
shape of dlib's (unit vectors, one person's faces within 0.3 of each other, two people's about 1.4 apart), and the
rules of a regrouping written into a real embedded Chroma (`records.people`): a named person is never split or
merged, a face placed by hand never moved, and people keep their ids where their faces stay together."""

from __future__ import annotations

import chromadb
import numpy as np
import pytest

from ray_pipeline.model.faces import SAME_PERSON, Face, FacesFound
from ray_pipeline.records.people import PeopleBook
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.steps.grouping import edges_of_rows, group_faces, row_blocks

pytestmark = pytest.mark.unit


def people_faces(people: int, each: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors of `people` people, `each` faces apiece: (vectors, whose)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 128)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    whose = np.repeat(np.arange(people), each)
    noise = rng.normal(size=(len(whose), 128)).astype(np.float32)
    noise *= 0.1 / np.linalg.norm(noise, axis=1, keepdims=True)
    return centres[whose] + noise, whose


def same_partition(labels, whose) -> bool:
    pairs = {(int(a), int(b)) for a, b in zip(labels, whose)}
    return len(pairs) == len(set(labels)) == len(set(whose.tolist()))


def test_faces_group_into_their_people_whatever_the_blocks():
    vectors, whose = people_faces(40, 30)
    assert same_partition(group_faces(vectors), whose)
    # The same graph, made a block at a time as the Ray tasks make it.
    by_blocks = group_faces(vectors, lambda v, _: [e for s, t in row_blocks(len(v), 97) for e in edges_of_rows(v, s, t)])
    assert same_partition(by_blocks, whose)


def test_the_graph_keeps_the_nearest_within_the_threshold_only():
    vectors, _ = people_faces(3, 50)
    edges = edges_of_rows(vectors, 0, len(vectors), neighbours=5)
    degree = np.bincount([a for a, _, _ in edges] + [b for _, b, _ in edges], minlength=len(vectors))
    assert 5 <= degree.min() and degree.max() <= 5 * 2 + 10  # its own 5, and those that chose it
    assert all(a < b and 0 < weight <= 1 for a, b, weight in edges)
    far = np.eye(128, dtype=np.float32)[:4]  # four faces 1.41 apart: no edge, four people
    assert edges_of_rows(far, 0, 4) == [] and sorted(group_faces(far)) == [0, 1, 2, 3]
    assert group_faces(np.zeros((0, 128), np.float32)) == []


def found(vector: np.ndarray) -> FacesFound:
    return FacesFound([Face((0.1, 0.1, 0.3, 0.3), 1.0, vector)])


@pytest.fixture
def book(tmp_path):
    target = StoreTarget(collection="grouped", path=str(tmp_path))
    return PeopleBook.of(chromadb.PersistentClient(str(tmp_path)), target, 1000, create=True)


def test_a_regrouping_never_splits_or_merges_a_named_person(book):
    vectors, whose = people_faces(3, 6)
    photos = {f"photo{index:02d}": vector for index, vector in enumerate(vectors)}
    in_photos = book.store({photo: found(vector) for photo, vector in photos.items()}, {p: f"/p/{p}.jpg" for p in photos})
    first = {photo: people[0] for photo, people in in_photos.items()}
    assert len(set(first.values())) == 3  # each face joined its person's nearest face as it came
    # By hand: person 0's faces split over two people, one of them named; person 1 and 2 merged into one, named.
    book.name(first["photo00"], "Anna")
    book.move("photo03:0", book._new_person())  # placed by hand: stays
    book.merge(first["photo06"], first["photo12"])
    book.name(first["photo06"], "Both")
    before = {face.id: face.person for person in book.people() for face in book.faces_of(person.id)}

    groups = group_faces(book.all_faces().vectors)
    changed = book.apply_groups(dict(zip(book.all_faces().ids, groups)))
    after = {face.id: face.person for person in book.people() for face in book.faces_of(person.id)}
    assert after == before and changed == {}  # the named and the placed by hand stay as they are
    assert {person.name for person in book.people()} == {"Anna", "Both", None}


def test_a_regrouping_joins_unnamed_faces_and_keeps_ids(book):
    vectors, whose = people_faces(2, 4)
    photos = {f"photo{index}": vector for index, vector in enumerate(vectors)}
    book.store({photo: found(vector) for photo, vector in photos.items()}, {p: f"/p/{p}" for p in photos})
    ids = {face.photo: face.person for person in book.people() for face in book.faces_of(person.id)}
    # Two of the first person's faces wrongly made people of their own (an older grouping), not by hand.
    book._set_person([book.face("photo1:0"), book.face("photo2:0")], book._new_person(), by_hand=False)
    book._recount({p.id for p in book.people()} | {book.face("photo1:0").person or ""})
    assert len(book.people()) == 3
    changed = book.apply_groups(dict(zip(book.all_faces().ids, group_faces(book.all_faces().vectors))))
    assert {photo: people for photo, people in changed.items()} == {"photo1": [ids["photo0"]], "photo2": [ids["photo0"]]}
    assert sorted(p.faces for p in book.people()) == [4, 4]
    assert {face.photo: face.person for person in book.people() for face in book.faces_of(person.id)} == ids


def test_two_people_are_told_apart_at_the_threshold(book):
    a = np.zeros(128, np.float32)
    a[0] = 1.0
    b = a.copy()
    b[1] = SAME_PERSON * 1.05  # just over the threshold from a
    c = a.copy()
    c[1] = -SAME_PERSON * 0.95  # just under it, on the other side (far from b)
    people = book.store({"a": found(a), "b": found(b), "c": found(c)}, {})
    assert people["a"] != people["b"] and people["c"] == people["a"]
