"""The bulk pipeline's driver-side logic and its stages, without Ray: the actor plan, the tally and the
summary line, the outcomes' names, the files a re-run need not read (unchanged, touched, moved, copied),
duplicates, and the prepare, embed and write stages called as Ray Data calls them, on real photo files
and the tiny seeded CLIP. No Ray cluster is started: Ray's metrics are recorded without one."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from test_claims import local_claims

from ray_pipeline.cluster.metrics import count_files, metrics
from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.outcome import Outcome
from ray_pipeline.core.paths import FileFailure, is_within, path_fields, recorded_path
from ray_pipeline.files.reading import read_file
from ray_pipeline.files.state import FileState, file_state
from ray_pipeline.model.clip import ModelSpec, recorded_identity
from ray_pipeline.records.chroma import MODEL_KEYS
from ray_pipeline.records.enrichments import LAYOUT_KEY, RECORD_LAYOUT, folders_of
from ray_pipeline.records.failures import Failure
from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.runs.bulk_stages import PrepareStage, rows_of, tally_of, write_block
from ray_pipeline.runs.plan import LIGHT_TASK_RESERVE, ActorPlan, plan_actors
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.steps import unchanged as unchanged_module
from ray_pipeline.steps.after import FilesThrough, after_files
from ray_pipeline.steps.journey import DuplicateRegistry, Journey, file_fields
from ray_pipeline.steps.pairs import PairsAmong
from ray_pipeline.steps.summary import Tally, print_summary, summary_in, summary_of
from ray_pipeline.steps.unchanged import Stored, stored_in
from samples.sample_photos import write_many

pytestmark = pytest.mark.unit

SMALL = InputGeometry(64, 64)  # a picture size that decodes fast, where no model takes the pixels
LATIN1_NAME = os.fsdecode(b"caf\xe9.jpg")  # a file name that is not UTF-8, as older archives have them


class FakeStore:
    """An in-memory RecordStore (`ray_pipeline.store.RecordStore`): records are dicts of id -> metadata
    and id -> vector, and remembered failures a dict of path -> Failure.

    A fake, not embedded Chroma: these tests are about the logic that calls the store (what is settled,
    claimed, counted and written), and the unit tier runs without Ray and without Chroma's start-up in
    every test. ChromaStore itself is tested on a real Chroma (test_journey, test_filters, test_prune_plan),
    and `test_the_fake_answers_as_chroma_does` below holds this fake to it where the logic under test
    leans on the store's answers. `query` is the one member left out: nothing here searches.
    """

    def __init__(self, collection: str = "stages", metadata: dict | None = None):
        self.target = StoreTarget(collection, path="/nowhere/fake-chroma")
        self._metadata = dict(metadata or {LAYOUT_KEY: RECORD_LAYOUT})
        self.metadatas: dict[str, dict] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.failures: dict[str, Failure] = {}
        self.upserts = 0  # calls, so a test can tell that nothing was written

    @property
    def metadata(self) -> dict:
        return dict(self._metadata)

    @property
    def outdated(self) -> bool:
        return self._metadata.get(LAYOUT_KEY, 1) < RECORD_LAYOUT

    def records(self, ids: list[str]) -> dict[str, dict]:
        return {i: dict(self.metadatas[i]) for i in ids if i in self.metadatas}

    def records_at(self, paths: list[str]) -> dict[str, dict]:
        wanted = set(paths)
        return {i: dict(m) for i, m in self.metadatas.items() if recorded_path(m) in wanted}

    def records_under(self, folders: list[str]) -> dict[str, dict]:
        return {i: dict(m) for i, m in self.metadatas.items() if is_within(recorded_path(m) or "", tuple(folders))}

    def unchanged(self, files: list[tuple[str, int, int]]) -> dict[str, str]:
        """As ChromaStore.unchanged: the very path, file_size and mtime_ns; a path two records match is left out."""
        wanted = {path: (size, mtime_ns) for path, size, mtime_ns in files}
        matches: dict[str, list[str]] = {}
        for record_id, metadata in self.records_at(list(wanted)).items():
            path = recorded_path(metadata) or ""
            if wanted[path] == (metadata.get("file_size"), metadata.get("mtime_ns")):
                matches.setdefault(path, []).append(record_id)
        return {path: ids[0] for path, ids in matches.items() if len(ids) == 1}

    def matching(self, where: dict | None, where_document: dict | None) -> dict[str, dict]:
        if where is not None or where_document is not None:
            raise NotImplementedError("the fake store takes no filters")
        return {i: dict(m) for i, m in self.metadatas.items()}

    def count(self) -> int:
        return len(self.metadatas)

    def query(self, embedding: np.ndarray, k: int, where: dict | None = None, where_document: dict | None = None) -> dict:
        raise NotImplementedError("nothing in these tests searches")

    def lacking(self, key: str, ids: list[str]) -> list[str]:
        return [i for i, m in self.records(ids).items() if not m.get(key)]

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None:
        assert len(ids) == len(embeddings) == len(metadatas)
        self.upserts += 1
        for record_id, vector, metadata in zip(ids, embeddings, metadatas):
            self.metadatas[record_id] = dict(metadata)
            self.vectors[record_id] = np.asarray(vector, np.float32)

    def merge_metadata(self, changes: dict[str, dict]) -> None:
        for record_id, keys in changes.items():
            if record_id in self.metadatas:  # as Chroma's update: ids not stored are passed over
                self.metadatas[record_id].update(keys)

    def add_paths(self, copies: dict[str, list[str]]) -> None:
        for record_id, paths in copies.items():
            if record_id in self.metadatas:
                known = self.metadatas[record_id].get("paths") or [self.metadatas[record_id]["path"]]
                self.metadatas[record_id]["paths"] = sorted({*known, *paths})

    def enrich(self, values: dict[str, dict]) -> None:
        self.merge_metadata({i: {**v, **{f"has_{k}": bool(x) for k, x in v.items()}} for i, v in values.items()})

    def delete(self, ids: list[str]) -> None:
        for record_id in ids:
            self.metadatas.pop(record_id, None)
            self.vectors.pop(record_id, None)

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]:
        return {path: failure.reason if failure.state == states[path] else None
                for path, failure in self.failures.items() if path in states}

    def remember_failures(self, failed: list[Failure], cleared: list[str]) -> None:
        for path in cleared:
            self.failures.pop(path, None)
        self.failures.update((failure.path, failure) for failure in failed)

    def note_ingestion(self, outcome: dict) -> None:
        self.last_ingestion = dict(outcome)

    @property
    def store(self) -> FakeStore:
        """The stages reach their store as a `StoreHandle` gives it, in the process they run in: this one."""
        return self


@pytest.fixture(autouse=True)
def no_ray_started():
    """The unit tier's promise: nothing here starts Ray (a stray `ray.get` would start a local one)."""
    yield
    import ray

    assert not ray.is_initialized(), "this test started Ray"


def content_id(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def store_as_ingested(store: FakeStore, *paths) -> list[str]:
    """Records for these files as an ingestion leaves them (id: the bytes' SHA-256; the file's place and
    stat as `journey.file_fields` writes them); their ids."""
    ids = []
    for path in paths:
        file = read_file(str(path))
        ids.append(hashlib.sha256(file.data).hexdigest())
        store.upsert([ids[-1]], np.ones((1, 4), np.float32), [file_fields(file)])
    return ids


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> list[str]:
    return write_many(str(tmp_path_factory.mktemp("originals")), 4)


@pytest.fixture
def library(originals, tmp_path) -> Path:
    """Four small, distinct real JPEGs (crop_000000.jpg ...), this test's own."""
    folder = tmp_path / "photos"
    shutil.copytree(os.path.dirname(originals[0]), folder)
    return folder


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The paths that `unchanged` reads and hashes itself."""
    seen: list[str] = []

    def spy(path):
        seen.append(path)
        return read_file(path)

    monkeypatch.setattr(unchanged_module, "read_file", spy)
    return seen


# --- the actor plan -------------------------------------------------------------------------------


def planned_cpus(plan: ActorPlan) -> float:
    return plan.embed_cpus * plan.embed_actors[1] + plan.decode_cpus * plan.decode_actors


def test_a_two_cpu_machine_without_a_gpu_shares_fractions_of_its_cpus():
    plan = plan_actors("cpu", None, free_cpus=2, gpus=0)
    # One embedding actor and one decode actor on three quarters of a CPU each; torch may use both CPUs,
    # which decoding leaves idle between batches.
    assert plan == ActorPlan(embed_actors=(1, 1), embed_cpus=0.75, embed_threads=2, decode_actors=1, decode_cpus=0.75)
    assert planned_cpus(plan) <= 2 - LIGHT_TASK_RESERVE


def test_a_larger_cpu_machine_gives_embedding_whole_cpus_and_their_threads():
    plan = plan_actors("cpu", None, free_cpus=8, gpus=0)
    assert plan == ActorPlan(embed_actors=(1, 1), embed_cpus=3, embed_threads=3, decode_actors=4, decode_cpus=1)


def test_on_a_gpu_node_decoding_gets_every_cpu_the_gpu_actors_do_not_hold():
    assert plan_actors("cuda", None, free_cpus=16, gpus=1) == ActorPlan(
        embed_actors=(1, 1), embed_cpus=1, embed_threads=1, decode_actors=14, decode_cpus=1)
    four = plan_actors("cuda", None, free_cpus=16, gpus=4)
    assert (four.embed_actors, four.embed_cpus, four.decode_actors) == ((1, 4), 1, 11)  # one pool actor per GPU at most


def test_actor_bounds_given_are_kept_and_planned_for():
    cuda = plan_actors("cuda", (2, 3), free_cpus=16, gpus=4)
    assert (cuda.embed_actors, cuda.decode_actors) == ((2, 3), 12)
    cpu = plan_actors("cpu", (1, 4), free_cpus=16, gpus=0)
    assert (cpu.embed_actors, cpu.embed_cpus, cpu.embed_threads, cpu.decode_actors, cpu.decode_cpus) == ((1, 4), 1, 1, 11, 1)


def test_a_gpu_node_short_of_cpus_gives_its_gpu_actor_a_share_of_one():
    """One CPU free beside a GPU: a whole CPU for the GPU's actor would leave decoding none, and the job
    would wait forever for it."""
    plan = plan_actors("cuda", None, free_cpus=1, gpus=1)
    assert (plan.embed_cpus, plan.decode_actors, plan.decode_cpus) == (0.25, 1, 0.25)
    assert planned_cpus(plan) <= 1 - LIGHT_TASK_RESERVE


def test_cpus_held_by_others_are_not_planned():
    """Planned from the CPUs free now (a Serve app may hold some), not the cluster's total."""
    assert plan_actors("cuda", None, free_cpus=4, gpus=1).decode_actors == 2
    busy = plan_actors("cpu", None, free_cpus=1, gpus=0)
    assert (busy.embed_cpus, busy.decode_actors, busy.decode_cpus) == (0.25, 1, 0.25)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_never_zero_decode_actors_and_never_more_cpus_than_are_free(device):
    """Every plan over a grid of machines: at least one decode actor, at least a quarter CPU an actor,
    and the actors' CPUs within what is free less the light tasks' reserve, wherever that can be (the
    CPUs leave each embedding actor a quarter CPU, and a quarter to decode)."""
    for free in (0, 0.25, 0.5, 1, 1.5, 2, 3, 4, 5.5, 7, 8, 12, 16, 31.5, 64, 96):
        for gpus in (1, 2, 4, 8) if device == "cuda" else (0,):
            for actors in (None, (1, 1), (1, 2), (2, 4), (1, 8)):
                plan = plan_actors(device, actors, free, gpus)
                high = plan.embed_actors[1]
                what = f"{device} free={free} gpus={gpus} actors={actors}: {plan}"
                assert plan.embed_actors == (actors or (1, gpus if device == "cuda" else 1)), what
                assert plan.decode_actors >= 1 and 0.25 <= plan.decode_cpus <= 1, what
                assert plan.embed_cpus >= 0.25 and plan.embed_threads >= 1, what
                budget = free - LIGHT_TASK_RESERVE
                if budget >= high * 0.5:
                    assert planned_cpus(plan) <= budget + 1e-9, what


# --- outcomes, the tally and the summary line -----------------------------------------------------------


def test_each_outcome_has_its_row_status_summary_key_and_metric():
    names = {outcome: (outcome.value, outcome.summary_key, outcome.metric) for outcome in Outcome}
    assert names == {
        Outcome.NEW: ("new", "embedded", "embedded"),
        Outcome.EXISTING: ("existing", "skipped_existing", "skipped"),
        Outcome.DUPLICATE: ("duplicate", "duplicates", "duplicate"),
        Outcome.FAILED: ("failed", "failed", "failed"),
    }
    assert Outcome("new") is Outcome.NEW and "new" == Outcome.NEW  # rows carry the plain string


def test_the_file_counters_are_named_photo_files_and_the_metric():
    counters = metrics().files  # Ray metrics objects: made without a Ray cluster, as in an actor before it records
    assert {key: counter.info["name"] for key, counter in counters.items()} == {
        "discovered": "photo_files_discovered",
        **{outcome.metric: f"photo_files_{outcome.metric}" for outcome in Outcome},
    }
    # Ray's counters refuse increments that are not positive: outcomes with no file are left out.
    count_files("stages", {Outcome.NEW: 2, Outcome.FAILED: 0}, discovered=0)


def counted(tally: Tally) -> dict:
    return {outcome.value: n for outcome, n in tally.outcomes.items()}


def test_the_tally_counts_each_outcome_and_the_reasons_of_failed_files():
    tally = Tally()
    tally.count([(Outcome.NEW, "/p/a.jpg", "", "a1"), (Outcome.NEW, "/p/b.jpg", "", "b1"),
                 (Outcome.EXISTING, "/p/c.jpg", "", "c1"), (Outcome.DUPLICATE, "/p/a copy.jpg", "", "a1"),
                 (Outcome.FAILED, "/p/broken.jpg", "not a recognised image format", "d1"),
                 (Outcome.FAILED, LATIN1_NAME, "empty file", "")])
    assert tally.files == 6
    assert list(tally.summary().items()) == [("discovered", 6), ("embedded", 2), ("skipped_existing", 1),
                                             ("duplicates", 1), ("failed", 2)]
    assert tally.errors == [FileFailure("/p/broken.jpg", "not a recognised image format"), FileFailure(LATIN1_NAME, "empty file")]
    assert (tally.stored, tally.held) == ([], [])  # remembered only when asked for

    only_new = Tally()
    only_new.count([(Outcome.NEW, "/p/a.jpg", "", "a1")])
    assert only_new.counts == {"embedded": 1}  # as progress reports carry them: no zero counts
    assert only_new.summary() == {"discovered": 1, "embedded": 1, "skipped_existing": 0, "duplicates": 0, "failed": 0}
    assert Tally().counts == {}


def test_with_keep_stored_the_tally_remembers_stored_files_and_every_hashed_one():
    tally = Tally()
    tally.count([(Outcome.NEW, "/p/a.jpg", "", "a1"), (Outcome.EXISTING, "/p/c.jpg", "", "c1"),
                 (Outcome.DUPLICATE, "/p/a copy.jpg", "", "a1"), (Outcome.FAILED, "/p/undecodable.jpg", "cannot decode", "d1"),
                 (Outcome.FAILED, "/p/unreadable.jpg", "permission denied", "")], keep_stored=True)
    assert tally.stored == [("a1", "/p/a.jpg"), ("c1", "/p/c.jpg")]  # captions: the records this run stored or found
    # prune: every file read and hashed, whatever became of it; one never read has no id
    assert tally.held == [("a1", "/p/a.jpg"), ("c1", "/p/c.jpg"), ("a1", "/p/a copy.jpg"), ("d1", "/p/undecodable.jpg")]


def test_failures_before_the_journey_and_tallies_of_blocks_add_up():
    tally = Tally()
    tally.fail([FileFailure("/p/deep", "cannot list folder: File name too long"), FileFailure("/p/x.jpg", "symlink loop")])
    assert counted(tally) == {"failed": 2} and len(tally.errors) == 2

    block = Tally()
    block.count([(Outcome.NEW, "/p/a.jpg", "", "a1"), (Outcome.FAILED, "/p/b.jpg", "empty file", "")], keep_stored=True)
    block.seconds.update(read=0.5, decode=1.25, write=0.125)
    block.removed = 3
    tally.add(block)
    tally.add(block)
    assert counted(tally) == {"failed": 4, "new": 2}
    assert [e.path for e in tally.errors] == ["/p/deep", "/p/x.jpg", "/p/b.jpg", "/p/b.jpg"]
    assert tally.stored == [("a1", "/p/a.jpg")] * 2 and tally.removed == 6
    assert tally.stage_seconds() == {"read": 1.0, "decode": 2.5, "embed": 0.0, "write": 0.25}


def test_the_summary_has_its_keys_in_the_order_of_the_line_users_read():
    tally = Tally()
    tally.count([(Outcome.NEW, "/p/a.jpg", "", "a1"), (Outcome.EXISTING, "/p/b.jpg", "", "b1")])
    tally.seconds["embed"] = 0.12345
    tally.removed = 1
    summary = summary_of("photos", tally, seconds=3.14159)
    assert list(summary) == ["collection", "discovered", "embedded", "skipped_existing", "duplicates", "failed", "removed",
                             "seconds", "stage_seconds"]
    assert (summary["collection"], summary["discovered"], summary["removed"], summary["seconds"]) == ("photos", 2, 1, 3.14)
    assert summary["stage_seconds"] == {"read": 0.0, "decode": 0.0, "embed": 0.123, "write": 0.0}
    captioned = summary_of("photos", tally, 1.0, {"captioned": 0})  # asked for captions, none written: still said
    assert list(captioned)[-3:] == ["captioned", "seconds", "stage_seconds"] and captioned["captioned"] == 0
    routed = summary_of("photos", tally, 1.0, route={"kind": "in_process", "reason": "a few files"})
    assert list(routed)[-1] == "route" and routed["route"]["kind"] == "in_process"


def test_the_summary_line_is_found_again_in_a_commands_output(capsys):
    tally = Tally()
    tally.count([(Outcome.NEW, "/p/a.jpg", "", "a1"), (Outcome.FAILED, "/p/b.jpg", "empty file", "")])
    summary = summary_of("photos", tally, 2.5, {"captioned": 1})
    print("INFO progress: 1 of 2 files")
    print_summary(summary)
    output = capsys.readouterr().out
    assert output.endswith("\n") and len(output.splitlines()) == 2
    # A Ray job's log goes on after the line with Ray's own.
    found = summary_in(output + "(raylet) INFO worker exited\n{\"not\": \"a summary\"}\n")
    assert found == summary
    assert summary_in("an earlier run\n" + json.dumps({**summary, "discovered": 9}) + "\n" + output) == summary  # the last one
    assert summary_in("INFO no summary here\n{\"embedded\": 1}\n") is None
    cut_short = json.dumps(summary)[:40]  # a job stopped while printing: its line says nothing, nor does an older one
    assert summary_in(cut_short + "\n") is None and summary_in(output + cut_short + "\n") is None


# --- what a re-run need not read ---------------------------------------------------------------------


def test_unchanged_files_are_settled_without_being_read(library, reads):
    a, b, c, d = sorted(str(p) for p in library.iterdir())
    store = FakeStore()
    ids = store_as_ingested(store, a, b)
    stored = stored_in(store, [a, b, c, d])
    assert stored.unchanged == {a: ids[0], b: ids[1]} and stored.duplicates == {}
    assert stored.left_to_read([a, b, c, d]) == [c, d]
    assert reads == [c, d]  # the new files are hashed to tell; the unchanged ones are never opened
    assert stored.collection_metadata == store.metadata


def test_a_touched_file_is_read_here_once_and_its_record_learns_the_new_stat(library, reads):
    a, b = sorted(str(p) for p in library.iterdir())[:2]
    store = FakeStore()
    id_a, id_b = store_as_ingested(store, a, b)
    os.utime(a, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))  # same bytes, a new mtime
    stored = stored_in(store, [a, b])
    assert stored.unchanged == {a: id_a, b: id_b} and stored.duplicates == {}
    assert reads == [a]
    record = store.records([id_a])[id_a]
    assert (record["mtime_ns"], record["file_size"], record["path"]) == (1_700_000_000_123_456_789, os.path.getsize(a), a)
    reads.clear()
    assert stored_in(store, [a, b]).unchanged[a] == id_a and reads == []  # the next run does not read it


def test_a_moved_file_is_its_records_which_takes_the_new_path(library, reads):
    a, b = sorted(str(p) for p in library.iterdir())[:2]
    store = FakeStore()
    (id_a, _) = store_as_ingested(store, a, b)
    (library / "2024").mkdir()
    moved = str(library / "2024" / "moved.jpg")
    os.rename(a, moved)
    stored = stored_in(store, [moved, b])
    assert stored.unchanged[moved] == id_a and stored.duplicates == {} and stored.left_to_read([moved, b]) == []
    record = store.records([id_a])[id_a]
    assert (record["path"], record["filename"], record["folders"]) == (moved, "moved.jpg", folders_of(moved))
    assert store.count() == 2


def test_a_copy_of_a_stored_file_under_another_listed_path_is_a_duplicate(library, reads):
    a, b = sorted(str(p) for p in library.iterdir())[:2]
    store = FakeStore()
    (id_a, id_b) = store_as_ingested(store, a, b)
    copy = str(library / "a copy.jpg")
    shutil.copy(a, copy)
    stored = stored_in(store, [a, b, copy])
    assert stored.unchanged == {a: id_a, b: id_b} and stored.duplicates == {copy: id_a}
    assert store.records([id_a])[id_a]["path"] == a  # the record stays with the original
    assert stored.holds() == {a: id_a, b: id_b, copy: id_a}
    tally = Tally()
    stored.count_into(tally)
    assert tally.counts == {"skipped_existing": 2, "duplicates": 1}

    # The original touched too: both are read here, and one is counted stored, the other a copy of it.
    os.utime(a, ns=(1_600_000_000_000_000_000,) * 2)
    both = stored_in(store, [copy, a, b])
    assert both.unchanged == {copy: id_a, b: id_b} and both.duplicates == {a: id_a}


def test_a_copy_whose_original_is_not_listed_is_the_records_own_file(library, tmp_path):
    """Listing only a folder of copies: they are the records' files as far as this run goes, not duplicates."""
    a = sorted(str(p) for p in library.iterdir())[0]
    store = FakeStore()
    (id_a,) = store_as_ingested(store, a)
    (tmp_path / "backup").mkdir()
    copy = str(tmp_path / "backup" / "a.jpg")
    shutil.copy(a, copy)
    stored = stored_in(store, [copy])
    assert stored.unchanged == {copy: id_a} and stored.duplicates == {}
    assert store.records([id_a])[id_a]["path"] == a  # its own file is still there: the record keeps it


def test_rehash_settles_nothing_and_reads_every_file_in_the_job(library, reads):
    paths = sorted(str(p) for p in library.iterdir())
    store = FakeStore()
    store_as_ingested(store, *paths)
    stored = stored_in(store, paths, rehash=True)
    assert (stored.unchanged, stored.duplicates, stored.failed) == ({}, {}, {})
    assert stored.left_to_read(paths) == paths and reads == [] and stored.claims() == []


def test_files_outside_the_allowed_folders_are_not_settled(library, tmp_path, reads):
    inside = sorted(str(p) for p in library.iterdir())[0]
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = str(outside / "secret.jpg")
    shutil.copy(sorted(str(p) for p in library.iterdir())[1], secret)
    link = str(library / "leak.jpg")
    os.symlink(secret, link)
    store = FakeStore()
    id_inside, id_secret = store_as_ingested(store, inside, secret)
    stored = stored_in(store, [inside, secret, link], within=(str(library),))
    # Left to the job, which refuses them with their reason ("resolves outside the allowed folders").
    assert stored.unchanged == {inside: id_inside} and stored.duplicates == {}
    assert stored.left_to_read([inside, secret, link]) == [secret, link] and reads == []
    anywhere = stored_in(store, [inside, secret, link])  # without --within they are the record's and a copy of it
    assert anywhere.unchanged == {inside: id_inside, secret: id_secret} and anywhere.duplicates == {link: id_secret}


def test_a_file_that_failed_before_is_reported_again_unread_until_it_changes(library):
    a, b, c, d = sorted(str(p) for p in library.iterdir())
    store = FakeStore()
    store.remember_failures([Failure(a, file_state(a), "cannot decode: truncated"),
                             Failure(b, FileState(1, 2, 3), "empty file")], [])  # b has changed since
    stored = stored_in(store, [a, b, c, d])
    assert stored.failed == {a: "cannot decode: truncated"} and stored.changed_since_failing == {b}
    assert stored.left_to_read([a, b, c, d]) == [b, c, d]
    tally = Tally()
    stored.count_into(tally)
    assert tally.counts == {"failed": 1} and tally.errors == [FileFailure(a, "cannot decode: truncated")]
    # After the job: b was read fine (forgotten), c failed for good (remembered as it was before reading),
    # d failed for a passing reason (not remembered: tried again next time).
    job = Tally()
    job.fail([FileFailure(c, "cannot decode: broken"), FileFailure(d, "permission denied")])
    after_files(store, FilesThrough.of(stored, PairsAmong([])), job)
    assert store.failures == {a: Failure(a, file_state(a), "cannot decode: truncated"),
                              c: Failure(c, file_state(c), "cannot decode: broken")}
    # --rehash reads them all again, and what was remembered is remembered afresh after the job.
    again = stored_in(store, [a, b, c, d], rehash=True)
    assert again.failed == {} and again.left_to_read([a, b, c, d]) == [a, b, c, d]
    assert again.changed_since_failing == {a, c}  # forgotten once they are read fine


def test_what_is_settled_is_claimed_counted_and_left_unread():
    stored = Stored(unchanged={"/p/a.jpg": "a1", "/p/c.jpg": "c1"}, duplicates={"/p/a copy.jpg": "a1"},
                    collection_metadata={}, failed={"/p/broken.jpg": "empty file"})
    paths = ["/p/a.jpg", "/p/a copy.jpg", "/p/new.jpg", "/p/broken.jpg", "/p/c.jpg"]
    assert stored.left_to_read(paths) == ["/p/new.jpg"]
    assert stored.claims() == [("a1", "/p/a.jpg"), ("c1", "/p/c.jpg")]  # unchanged files only: copies own nothing
    tally = Tally()
    stored.count_into(tally)
    assert tally.counts == {"skipped_existing": 2, "duplicates": 1, "failed": 1} and tally.stored == []
    assert tally.errors == [FileFailure("/p/broken.jpg", "empty file")]
    kept = Tally()
    stored.count_into(kept, keep_stored=True)
    assert kept.stored == stored.claims()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny seeded CLIP resolved as a job resolves it, and a checkpoint of other weights."""
    from ray_pipeline.model import clip as clip_model
    from samples.models import save_checkpoint, save_tiny_clip

    folder = tmp_path_factory.mktemp("model")
    config, checkpoint = save_tiny_clip(folder, seed=1234)
    other = save_checkpoint(folder, "tiny-clip", seed=99)
    spec = ModelSpec(str(config), None, str(checkpoint))
    resolved, network = clip_model.resolve(spec)
    return {"spec": spec, "other": dataclasses.replace(spec, checkpoint=str(other)), "resolved": resolved, "network": network}


def test_a_collection_covers_the_files_only_of_this_model_and_the_current_layout(tiny):
    written = {**tiny["resolved"].collection_metadata(), LAYOUT_KEY: RECORD_LAYOUT}  # as ChromaStore records them
    paths = ["/p/a.jpg", "/p/a copy.jpg", "/p/broken.jpg"]

    def stored(metadata, **unchanged):
        return Stored({"/p/a.jpg": "a1", **unchanged}, {"/p/a copy.jpg": "a1"}, metadata, failed={"/p/broken.jpg": "empty file"})

    assert recorded_identity(tiny["spec"]) == {key: written[key] for key in MODEL_KEYS}  # known without loading it
    assert stored(written).covers(paths, tiny["spec"])
    assert not stored(written).covers([*paths, "/p/new.jpg"], tiny["spec"])  # a file left to read
    assert not stored(written).covers(paths, tiny["other"])  # another model: the job refuses it, with its reason
    assert not stored({**written, LAYOUT_KEY: 1}).covers(paths, tiny["spec"])  # brought up to date by the job
    assert not stored({k: v for k, v in written.items() if k != LAYOUT_KEY}).covers(paths, tiny["spec"])
    assert not stored(None).covers(paths, tiny["spec"])  # no collection yet
    gone = dataclasses.replace(tiny["spec"], checkpoint="/nowhere/weights.pt")
    assert not stored(written).covers(paths, gone)  # only loading can tell


# --- duplicates within one ingestion --------------------------------------------------------------------


def test_the_first_path_owns_a_content_and_later_copies_are_duplicates(library):
    a, b = sorted(str(p) for p in library.iterdir())[:2]
    copy = str(library / "a copy.jpg")
    shutil.copy(a, copy)
    store = FakeStore()
    registry = DuplicateRegistry()
    journey = Journey(store, registry.claim, SMALL, defaults.MAX_PIXELS)
    first = journey.run([a, copy, b])
    assert [f.status for f in first] == [Outcome.NEW, Outcome.DUPLICATE, Outcome.NEW]
    assert first[0].id == first[1].id == content_id(a) and first[1].photo is None  # a copy is never decoded
    # A retried batch, in another order: each path keeps what it claimed.
    assert [f.status for f in journey.run([copy, a])] == [Outcome.DUPLICATE, Outcome.NEW]
    assert registry.claim([(content_id(a), a), (content_id(a), copy)]) == [True, False]
    assert store.upserts == 0  # the journey reads and decodes; writing is the sink's


def test_a_copy_of_a_file_passed_over_unread_is_a_duplicate_in_the_job(library):
    """As the job does: the unchanged files are claimed in its registry first, so a copy read in the job is
    a duplicate, not stored again as its own record."""
    a, b = sorted(str(p) for p in library.iterdir())[:2]
    store = FakeStore()
    (id_a,) = store_as_ingested(store, a)
    copy = str(library / "a copy.jpg")
    shutil.copy(a, copy)
    stored = stored_in(store, [a, b, copy], read_leftovers=False)  # as when the owner checks: the journeys tell
    assert stored.left_to_read([a, b, copy]) == [b, copy]
    registry = DuplicateRegistry()
    registry.claim(stored.claims())
    files = Journey(store, registry.claim, SMALL, defaults.MAX_PIXELS).run(stored.left_to_read([a, b, copy]))
    assert [(f.status, f.id) for f in files] == [(Outcome.NEW, content_id(b)), (Outcome.DUPLICATE, id_a)]


def test_a_stored_content_under_a_new_path_is_existing_and_its_record_follows(library):
    a = sorted(str(p) for p in library.iterdir())[0]
    store = FakeStore()
    (id_a,) = store_as_ingested(store, a)
    moved = str(library / "moved.jpg")
    os.rename(a, moved)
    (seen,) = Journey(store, DuplicateRegistry().claim, SMALL, defaults.MAX_PIXELS).run([moved])
    assert (seen.status, seen.id, seen.photo) == (Outcome.EXISTING, id_a, None)
    assert store.records([id_a])[id_a]["path"] == moved


# --- the stages, called as Ray Data calls them -----------------------------------------------------------


def prepare_stage(store: FakeStore, geometry: InputGeometry) -> PrepareStage:
    """The CPU stage as an actor holds it. Its claims go to the job's registry shards through Ray; here
    to shards in this process (`test_claims.LocalShard`)."""
    return PrepareStage(store, local_claims(3), geometry, defaults.MAX_PIXELS)


def path_column(paths) -> np.ndarray:
    return np.array([os.fsencode(p) for p in paths], dtype=object)  # as pipeline._paths_dataset gives them


def test_the_prepare_stage_gives_one_row_per_file_with_pixels_only_for_new_ones(library):
    a, b, c = sorted(str(p) for p in library.iterdir())[:3]
    latin1 = os.path.join(library, LATIN1_NAME)
    os.rename(c, latin1)
    copy, broken = str(library / "a copy.jpg"), str(library / "broken.jpg")
    shutil.copy(a, copy)
    Path(broken).write_bytes(b"not a photo")
    store = FakeStore()
    (id_b,) = store_as_ingested(store, b)
    paths = [a, b, copy, broken, latin1]
    rows = prepare_stage(store, SMALL)({"path": path_column(paths)})
    assert set(rows) == {"path", "id", "status", "reason", "pixels", "metadata", "read_seconds", "decode_seconds"}
    assert all(len(column) == len(paths) for column in rows.values())
    assert list(rows["path"]) == [os.fsencode(p) for p in paths]  # bytes, the non-UTF-8 name's exactly
    assert list(rows["status"]) == ["new", "existing", "duplicate", "failed", "new"]
    assert all(type(status) is str for status in rows["status"])  # plain strings through Arrow
    assert list(rows["id"]) == [content_id(a), id_b, content_id(a), content_id(broken), content_id(latin1)]
    assert list(rows["reason"]) == ["", "", "", "not a recognised image format", ""]
    assert [len(p) for p in rows["pixels"]] == [64 * 64 * 3, 0, 0, 0, 64 * 64 * 3]
    assert [bool(m) for m in rows["metadata"]] == [True, False, False, False, True]
    latin1_record = json.loads(rows["metadata"][4])
    assert latin1_record["path"] == os.fsencode(latin1).decode("utf-8", "backslashreplace")
    assert recorded_path(latin1_record) == latin1 and latin1_record["file_size"] == os.path.getsize(latin1)
    assert rows["read_seconds"].dtype == rows["decode_seconds"].dtype == np.float64
    assert rows["decode_seconds"][0] > 0 and rows["decode_seconds"][2] == 0  # a copy is never decoded


def test_rows_of_an_empty_batch_have_every_column():
    rows = rows_of([])
    assert {name: len(column) for name, column in rows.items()} == dict.fromkeys(
        ("path", "id", "status", "reason", "pixels", "metadata", "read_seconds", "decode_seconds"), 0)


def embedded_block(rows: list[dict]) -> dict[str, np.ndarray]:
    """A block as the embedding stage leaves it for the write stage, as Ray Data hands it over (numpy)."""
    columns = {"path": pa.binary(), "status": pa.string(), "reason": pa.string(), "id": pa.string(),
               "embedding": pa.binary(), "metadata": pa.string(), "read_seconds": pa.float64(),
               "decode_seconds": pa.float64(), "embed_seconds": pa.float64(), "precision": pa.string()}
    return as_batch(pa.table({name: pa.array([row[name] for row in rows], kind) for name, kind in columns.items()}))


def as_batch(block: pa.Table) -> dict[str, np.ndarray]:
    return {name: block.column(name).to_numpy(zero_copy_only=False) for name in block.column_names}


def write(store: FakeStore, *blocks: dict, keep_stored: bool = False) -> Tally:
    """The write stage on each block, and the driver's sum of the rows it leaves (as the job's driver adds them up)."""
    return tally_of([write_block(block, store, Reporter(None, "stages"), keep_stored) for block in blocks])


def row(path: str, status: str, record_id: str = "", reason: str = "", vector: np.ndarray | None = None, seconds: float = 0.25) -> dict:
    return {"path": os.fsencode(path), "status": status, "reason": reason, "id": record_id,
            "embedding": b"" if vector is None else vector.astype(np.float32).tobytes(),
            "metadata": json.dumps(path_fields(path)) if status == "new" else "",
            "read_seconds": seconds, "decode_seconds": seconds if status == "new" else 0.0, "embed_seconds": 0.5 if status == "new" else 0.0, "precision": "bf16" if status == "new" else ""}


def test_the_write_stage_stores_new_rows_with_their_vectors_and_counts_every_row():
    vectors = np.random.default_rng(3).normal(size=(3, 8)).astype(np.float32)
    store = FakeStore()
    first = embedded_block([row("/p/a.jpg", "new", "a1", vector=vectors[0]), row("/p/b.jpg", "existing", "b1"),
                            row("/p/a copy.jpg", "duplicate", "a1"), row(LATIN1_NAME, "failed", "", "empty file"),
                            row("/p/c.jpg", "new", "c1", vector=vectors[1])])
    second = embedded_block([row("/p/d.jpg", "new", "d1", vector=vectors[2]), row("/p/e.jpg", "failed", "e1", "cannot decode: x")])
    tally = write(store, first, second, keep_stored=True)
    assert sorted(store.vectors) == ["a1", "c1", "d1"]
    assert all(np.array_equal(store.vectors[i], v) for i, v in zip(["a1", "c1", "d1"], vectors))
    assert store.records(["c1"])["c1"] == {"path": "/p/c.jpg"}
    assert tally.summary() == {"discovered": 7, "embedded": 3, "skipped_existing": 1, "duplicates": 1, "failed": 2}
    assert tally.errors == [FileFailure(LATIN1_NAME, "empty file"), FileFailure("/p/e.jpg", "cannot decode: x")]
    assert tally.stored == [("a1", "/p/a.jpg"), ("b1", "/p/b.jpg"), ("c1", "/p/c.jpg"), ("d1", "/p/d.jpg")]
    assert ("e1", "/p/e.jpg") in tally.held and ("a1", "/p/a copy.jpg") in tally.held
    seconds = tally.stage_seconds()
    assert (seconds["read"], seconds["decode"], seconds["embed"]) == (1.75, 0.75, 1.5) and seconds["write"] >= 0
    assert tally.precisions == {"bf16"}  # the summary's `actors.precision`: what the vectors were made in
    # The driver's tally is the sum of the blocks' (each block's written row carries its own).
    assert write(store, first).summary()["discovered"] + write(store, second).summary()["discovered"] == 7


def test_a_block_with_nothing_new_writes_nothing():
    store = FakeStore()
    tally = write(store, embedded_block([row("/p/b.jpg", "existing", "b1"), row("/p/b copy.jpg", "duplicate", "b1")]))
    assert store.upserts == 0 and tally.counts == {"skipped_existing": 1, "duplicates": 1}
    assert (tally.stored, tally.held) == ([], [])  # remembered only when the job keeps them (captions, prune)


@pytest.fixture
def torch_threads():
    """EmbedStage sets torch's thread count for its process: put back for the tests after this one."""
    import torch

    threads = torch.get_num_threads()
    yield threads
    torch.set_num_threads(threads)


def test_the_three_stages_store_each_new_file_with_the_models_vector(library, tiny, torch_threads):
    """prepare -> embed -> write, as Ray Data chains them: each new file's record holds the vector the
    model gives its pixels; the other rows pass through to be counted."""
    from ray_pipeline.model.embedders import LocalEmbedder
    from ray_pipeline.runs.bulk_stages import EmbedOptions, EmbedStage

    a, b, c = sorted(str(p) for p in library.iterdir())[:3]
    copy = str(library / "c copy.jpg")
    shutil.copy(c, copy)
    store = FakeStore()
    (id_b,) = store_as_ingested(store, b)
    resolved = tiny["resolved"]
    prepared = prepare_stage(store, resolved.geometry)({"path": path_column([a, b, c, copy])})
    pixels = np.stack([np.frombuffer(prepared["pixels"][i], np.uint8).reshape(resolved.geometry.pixel_shape) for i in (0, 2)])

    options = EmbedOptions(resolved=resolved, device="cpu", compile="off", batch_size=32, collection="stages", threads=torch_threads)
    embedded = EmbedStage(options)({name: column.copy() for name, column in prepared.items()})
    assert "pixels" not in embedded and list(embedded["path"]) == list(prepared["path"])
    expected = LocalEmbedder(resolved, network=tiny["network"]).embed(pixels)
    vectors = [np.frombuffer(embedded["embedding"][i], np.float32) for i in (0, 2)]
    assert np.allclose(vectors, expected, atol=1e-5) and vectors[0].shape == (resolved.embedding_dim,)
    assert list(embedded["embedding"][[1, 3]]) == [b"", b""]
    assert embedded["embed_seconds"][0] > 0 and list(embedded["embed_seconds"][[1, 3]]) == [0, 0]

    block = pa.table({name: pa.array(list(column)) for name, column in embedded.items()})
    tally = write(store, as_batch(block))
    assert tally.summary() == {"discovered": 4, "embedded": 2, "skipped_existing": 1, "duplicates": 1, "failed": 0}
    assert sorted(store.vectors) == sorted([content_id(a), id_b, content_id(c)])
    assert np.allclose(store.vectors[content_id(c)], expected[1], atol=1e-5)
    assert store.records([content_id(a)])[content_id(a)]["path"] == a


# --- the fake against the real store ----------------------------------------------------------------------


@pytest.fixture(params=["fake", "chroma"])
def either_store(request, tmp_path):
    if request.param == "fake":
        yield FakeStore()
        return
    with opened_for_writing(StoreTarget("stages", path=str(tmp_path / "chroma")), {"model": "tiny-clip", "weights": "test"}) as opened:
        yield opened


def test_the_fake_answers_as_chroma_does(either_store):
    """What the logic above leans on: `unchanged` matches the very path, size and mtime_ns (a path that two
    records match is left out), a non-UTF-8 name included; `merge_metadata` keeps the other keys."""
    store = either_store
    latin1 = "/lib/" + LATIN1_NAME
    records = {"r1": ("/lib/a.jpg", 10, 100), "r2": ("/lib/twice.jpg", 20, 200), "r3": ("/lib/twice.jpg", 20, 200),
               "r4": (latin1, 30, 1_700_000_000_123_456_789), "r5": ("/lib/b.jpg", 40, 400)}
    store.upsert(list(records), np.random.default_rng(5).normal(size=(len(records), 4)).astype(np.float32),
                 [{**path_fields(path), "file_size": size, "mtime_ns": mtime_ns, "format": "jpg"}
                  for path, size, mtime_ns in records.values()])
    asked = [("/lib/a.jpg", 10, 100), ("/lib/twice.jpg", 20, 200), (latin1, 30, 1_700_000_000_123_456_789),
             ("/lib/b.jpg", 40, 401), ("/lib/c.jpg", 10, 100)]
    assert store.unchanged(asked) == {"/lib/a.jpg": "r1", latin1: "r4"}
    assert store.unchanged([("/lib/a.jpg", 11, 100)]) == {}
    assert sorted(store.records_at(["/lib/twice.jpg", latin1])) == ["r2", "r3", "r4"]
    store.merge_metadata({"r5": {"mtime_ns": 401}, "nowhere": {"mtime_ns": 1}})
    assert store.records(["r5", "nowhere"]) == {"r5": {"path": "/lib/b.jpg", "file_size": 40, "mtime_ns": 401, "format": "jpg"}}
    assert store.unchanged([("/lib/b.jpg", 40, 401)]) == {"/lib/b.jpg": "r5"}
