"""Summary: what one ingestion did with each file, counted, with the failed files' reasons and the
seconds each stage spent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ray_pipeline.file_names import failure
from ray_pipeline.journey import DUPLICATE, EXISTING, FAILED, NEW

# How each row status is counted in the job summary.
SUMMARY_KEYS = {NEW: "embedded", EXISTING: "skipped_existing", DUPLICATE: "duplicates", FAILED: "failed"}
# Per-row busy time of each stage, summed over all actors: where the job's CPU and GPU time went.
STAGE_COLUMNS = {"read": "read_seconds", "decode": "decode_seconds", "embed": "embed_seconds"}


class Tally:
    """Counts per summary key, the failed files with their reasons, the (id, path) of stored files and of
    every file whose bytes were hashed, the records removed, and the seconds each stage spent."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.errors: list[dict] = []
        self.stored: list[tuple[str, str]] = []  # new and existing records (for captions)
        self.held: list[tuple[str, str]] = []  # every file read and hashed, whatever became of it (for prune)
        self.removed = 0
        self.seconds: Counter = Counter()

    def add(self, other: "Tally") -> None:
        self.counts.update(other.counts)
        self.errors.extend(other.errors)
        self.stored.extend(other.stored)
        self.held.extend(other.held)
        self.removed += other.removed
        self.seconds.update(other.seconds)

    def fail(self, problems: list[dict]) -> None:
        """Files that failed before their journey ({"path", "reason"} each)."""
        self.errors += problems
        self.counts["failed"] += len(problems)

    def count(self, outcomes: Iterable[tuple[str, str, str, str]], keep_stored: bool = False) -> None:
        """Count each file's (status, path, reason, id); with `keep_stored`, remember the stored ones and
        the contents of all."""
        for status, path, reason, record_id in outcomes:
            self.counts[SUMMARY_KEYS[status]] += 1
            if status == FAILED:
                self.errors.append(failure(path, reason))
            if keep_stored and status in (NEW, EXISTING):
                self.stored.append((record_id, path))
            if keep_stored and record_id:
                self.held.append((record_id, path))

    def summary(self) -> dict[str, int]:
        counts = {key: self.counts.get(key, 0) for key in SUMMARY_KEYS.values()}
        return {"discovered": sum(counts.values()), **counts}

    def stage_seconds(self) -> dict[str, float]:
        return {stage: round(self.seconds.get(stage, 0.0), 3) for stage in (*STAGE_COLUMNS, "write")}


def summary_of(collection: str, tally: Tally, seconds: float, captioned: int | None = None) -> dict:
    """An ingestion's summary, in the order of the line the `ingest` command prints last."""
    summary = {"collection": collection, **tally.summary(), "removed": tally.removed}
    if captioned is not None:
        summary["captioned"] = captioned
    summary["seconds"] = round(seconds, 2)
    summary["stage_seconds"] = tally.stage_seconds()
    return summary
