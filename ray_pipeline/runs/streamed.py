"""Streamed: a Parquet manifest (a file, or a folder of files) read by Ray Data, never held by the driver.

Its rows are partitioned by shot (folder and name stem), so that a path listed twice lands in one
partition, where it is taken once, and a RAW file lands beside its JPEG, where the pair is found after
the job. Each partition is checked against the collection in a Ray task (`unchanged.stored_in`, the
check a listing held by the driver gets): files stored and unchanged, or failed before and unchanged,
are settled there; the others are left for the job to read. The checked rows stay in Ray's object
store; the driver holds counts, and the rows of failed files.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_pipeline.core.outcome import Outcome
from ray_pipeline.core.paths import FileFailure
from ray_pipeline.files.listing import DiscoveryError, manifest_entry
from ray_pipeline.files.state import FileState
from ray_pipeline.records.owner import StoreHandle
from ray_pipeline.records.store import RecordStore
from ray_pipeline.runs.bulk import rows_per_block
from ray_pipeline.runs.claims import ShardedClaims
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.steps.after import After, FilesThrough, after_files
from ray_pipeline.steps.pairs import pair_records, shot_of
from ray_pipeline.steps.summary import Tally
from ray_pipeline.steps.unchanged import Stored, stored_in

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

PARTITION_ROWS = 50_000  # listed paths checked by one task: one store query's worth, a few MB of rows
# The listing's tasks wait on reading, stat calls and the store more than on a CPU: a share of one each, so
# they run where a Serve app leaves less than a whole CPU free, and many at once.
TASK_CPUS = 0.25
TO_READ = ""  # the status of a checked row that the job reads; settled rows carry their Outcome
CHANGED = "changed"  # `before` of a file that failed before, in another state: read again, forgotten if fine now


@dataclass(frozen=True)
class StreamedManifest:
    """A Parquet manifest, checked here from its footers only: its rows are counted, not read."""

    files: tuple[str, ...]  # the Parquet files: the one given, or those in the folder given (at any depth)
    base: str  # the folder its relative entries are taken from
    rows: int

    @classmethod
    def open(cls, manifest: str) -> StreamedManifest:
        """The manifest, or a DiscoveryError naming it and what is wrong."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        path = Path(manifest).expanduser().resolve()
        if not path.exists():
            raise DiscoveryError(f"no such manifest: {manifest}")
        files = tuple(sorted(str(f) for f in path.rglob("*.parquet"))) if path.is_dir() else (str(path),)
        if not files:
            raise DiscoveryError(f"manifest {manifest}: the folder holds no Parquet files")
        try:
            dataset = ds.dataset(list(files), format="parquet")
            if "path" not in dataset.schema.names:
                raise ValueError(f"its columns are {dataset.schema.names}")
            kind = dataset.schema.field("path").type
            if not any(check(kind) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                                 pa.types.is_large_binary)):
                raise ValueError(f"it holds {kind}, not file names (string or binary)")
            rows = dataset.count_rows()
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise DiscoveryError(f"manifest {manifest}: cannot read a 'path' column ({exc})") from None
        return cls(files, str(path if path.is_dir() else path.parent), rows)


def _listed_rows(table: pa.Table, base: str, home: str) -> pa.Table:
    """The manifest's entries as absolute paths (bytes: a name need not be UTF-8), with their shot. `~` is
    the driver's home (`home`), as in a text manifest, not the Ray worker's."""
    import pyarrow as pa

    entries = [os.fsdecode(entry) for entry in table.column("path").to_pylist() if entry]
    paths = [manifest_entry(base, home + e[1:] if e == "~" or e.startswith("~/") else e) for e in entries]
    return pa.table({"path": pa.array([os.fsencode(p) for p in paths], pa.binary()),
                     "shot": pa.array([os.fsencode("/".join(shot_of(p))) for p in paths], pa.binary())})


def _checked_rows(table: pa.Table, store: StoreHandle, claims: ShardedClaims, within: tuple[str, ...],
                  rehash: bool) -> pa.Table:
    """One partition's distinct paths, each settled (its status and id or reason) or left to read (with
    its state before reading). The unchanged files are claimed in the job's duplicate registry, before any
    file is read, so a copy of one read by the job is a duplicate."""
    import pyarrow as pa

    paths = sorted({os.fsdecode(path) for path in table.column("path").to_pylist()})
    stored = stored_in(store.store, paths, within, rehash, read_leftovers=False) if paths else Stored({}, {}, None)
    if stored.unchanged:
        claims.claim(stored.claims())
    missing = FileState(-1, -1, -1)  # vanished since listing: reading it says why
    states = [stored.states.get(path, missing) for path in paths]
    return pa.table({
        "path": pa.array([os.fsencode(p) for p in paths], pa.binary()),
        "status": [Outcome.EXISTING.value if p in stored.unchanged else Outcome.FAILED.value if p in stored.failed else TO_READ
                   for p in paths],
        "id": [stored.unchanged.get(p, "") for p in paths],
        "reason": [stored.failed.get(p, "") for p in paths],
        "size": pa.array([s.size for s in states], pa.int64()),
        "mtime_ns": pa.array([s.mtime_ns for s in states], pa.int64()),
        "ctime_ns": pa.array([s.ctime_ns for s in states], pa.int64()),
        "before": [CHANGED if p in stored.changed_since_failing else "" for p in paths],
    })


def _where(table: pa.Table, status: str, columns: list[str]) -> pa.Table:
    import pyarrow.compute as pc

    return table.filter(pc.equal(table.column("status"), status)).select(columns)


def _status_counts(table: pa.Table) -> pa.Table:
    import pyarrow as pa

    counts = Counter(table.column("status").to_pylist())
    return pa.table({"status": list(counts), "n": list(counts.values())})


def _rows_to_remember(table: pa.Table, failed: frozenset[bytes]) -> pa.Table:
    """The rows read by the job that failed now, or that had failed before in another state."""
    import pyarrow as pa
    import pyarrow.compute as pc

    read = table.filter(pc.equal(table.column("status"), TO_READ))
    wanted = pc.or_(pc.is_in(read.column("path"), pa.array(list(failed), pa.binary())), pc.equal(read.column("before"), CHANGED))
    return read.filter(wanted).select(["path", "size", "mtime_ns", "ctime_ns", "before"])


def _pairs_in(table: pa.Table, store: StoreHandle) -> pa.Table:
    """Mark the pairs of one partition (a shot's files are all in one), among the shots read now."""
    import pyarrow as pa

    paths = [os.fsdecode(p) for p in table.column("path").to_pylist()]
    fresh = {os.fsdecode(p) for p in _where(table, TO_READ, ["path"]).column("path").to_pylist()}
    return pa.table({"pairs": [pair_records(store.store, paths, fresh) if fresh else 0]})


class StreamedInput:
    """A job's input from a streamed manifest (a `pipeline.JobInput`)."""

    def __init__(self, config: RunConfig, manifest: StreamedManifest):
        self.config = config
        self.manifest = manifest
        self.files = manifest.rows  # at most: a path listed twice is one file
        self.checked: Any = None  # the checked rows, once `settle` has run: a materialized Ray dataset

    def settle(self, store: StoreHandle, claims: ShardedClaims, tally: Tally):
        """Check every listed file; count the settled ones into `tally`. Returns (files discovered, the
        dataset of `path` rows the job reads, or None when there is none)."""
        import ray

        config = self.config
        partitions = max(1, math.ceil(self.files / PARTITION_ROWS), 2 * int(ray.cluster_resources().get("CPU", 1)))
        self.checked = (
            ray.data.read_parquet(list(self.manifest.files), num_cpus=TASK_CPUS).select_columns(["path"])
            .map_batches(_listed_rows, fn_kwargs={"base": self.manifest.base, "home": os.path.expanduser("~")}, batch_format="pyarrow", batch_size=None,
                         num_cpus=TASK_CPUS)
            .repartition(partitions, keys=["shot"])
            .map_batches(_checked_rows, fn_kwargs={"store": store, "claims": claims, "within": config.within,
                                                   "rehash": config.rehash},
                         batch_format="pyarrow", batch_size=None, num_cpus=TASK_CPUS)
            .materialize()
        )
        counts: Counter[str] = Counter()
        per_block = self.checked.map_batches(_status_counts, batch_format="pyarrow", batch_size=None, num_cpus=TASK_CPUS)
        for row in per_block.iter_rows():
            counts[row["status"]] += row["n"]
        tally.outcomes[Outcome.EXISTING] += counts[Outcome.EXISTING.value]
        tally.fail([FileFailure(os.fsdecode(row["path"]), row["reason"]) for row in self._rows(Outcome.FAILED.value, ["path", "reason"])])
        if config.keeps_contents:  # captions: every stored file, one entry each
            tally.stored += [(row["id"], os.fsdecode(row["path"])) for row in self._rows(Outcome.EXISTING.value, ["id", "path"])]
        logger.info("manifest %s: %d distinct files listed; %d stored already and unchanged, %d failed before and unchanged; "
                    "%d to read", self.config.manifest, sum(counts.values()), counts[Outcome.EXISTING.value],
                    counts[Outcome.FAILED.value], counts[TO_READ])
        if not counts[TO_READ]:
            return sum(counts.values()), None
        # Cut in small blocks now, while the CPUs are free: the job's actors take them all.
        rows = rows_per_block(counts[TO_READ], ray.cluster_resources().get("CPU", 1))
        to_read = self._with_status(TO_READ, ["path"])
        return sum(counts.values()), to_read.repartition(target_num_rows_per_block=rows).materialize()

    def _rows(self, status: str, columns: list[str]):
        return self._with_status(status, columns).iter_rows()

    def _with_status(self, status: str, columns: list[str]):
        """The checked rows of this status, these columns of them."""
        return self.checked.map_batches(_where, fn_kwargs={"status": status, "columns": columns}, batch_format="pyarrow",
                                        batch_size=None, num_cpus=TASK_CPUS)

    def after(self, store: StoreHandle, tally: Tally) -> After:
        """The sequence after the files, with what the checked rows kept of the files read (each one's state
        before reading, and whether it had failed before); the pairs are marked per partition, in Ray tasks."""
        failed = frozenset(os.fsencode(error.path) for error in tally.errors)
        rows = list(self.checked.map_batches(_rows_to_remember, fn_kwargs={"failed": failed}, batch_format="pyarrow",
                                             batch_size=None, num_cpus=TASK_CPUS).iter_rows())
        states = {os.fsdecode(r["path"]): FileState(r["size"], r["mtime_ns"], r["ctime_ns"]) for r in rows if r["size"] >= 0}
        changed = frozenset(os.fsdecode(r["path"]) for r in rows if r["before"] == CHANGED)
        through = FilesThrough(PairsByPartition(self.checked, store), states, changed)
        return after_files(store.store, through, tally, enrichments=self.config.enrichments, uploads=self.config.uploads)


@dataclass(frozen=True)
class PairsByPartition:
    """The pairs among a streamed manifest's files, marked per partition (a shot's files are all in one), in
    Ray tasks, among the shots read now."""

    checked: Any  # the checked rows: a materialized Ray dataset
    handle: StoreHandle  # what the tasks reach the collection with

    def mark(self, store: RecordStore) -> int:
        pairs = sum(row["pairs"] for row in self.checked.map_batches(
            _pairs_in, fn_kwargs={"store": self.handle}, batch_format="pyarrow", batch_size=None,
            num_cpus=TASK_CPUS).iter_rows())
        if pairs:
            logger.info("%d RAW+JPEG pairs marked", pairs)
        return pairs
