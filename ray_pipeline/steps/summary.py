"""Summary: what one ingestion did with each file, counted, with the failed files' reasons and the
seconds each stage spent."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable

from ray_pipeline.core.outcome import Outcome
from ray_pipeline.core.paths import FileFailure

# Per-row busy time of each stage, summed over all actors: where the job's CPU and GPU time went.
STAGE_COLUMNS = {"read": "read_seconds", "decode": "decode_seconds", "embed": "embed_seconds"}


class Tally:
    """Files by outcome, the failed files with their reasons, the (id, path) of stored files, of every
    file whose bytes were hashed and of the copies of stored bytes, the records removed, and the seconds
    each stage spent."""

    def __init__(self):
        self.outcomes: Counter[Outcome] = Counter()
        self.errors: list[FileFailure] = []
        self.stored: list[tuple[str, str]] = []  # new and existing records (for captions)
        self.held: list[tuple[str, str]] = []  # every file read and hashed, whatever became of it (for prune)
        self.copies: list[tuple[str, str]] = []  # (id, path) of files whose bytes a record holds already
        self.removed = 0
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.precisions: set[str] = set()  # the precisions the vectors were made in (fp32, bf16, fp16)

    def add(self, other: "Tally") -> None:
        self.outcomes.update(other.outcomes)
        self.errors.extend(other.errors)
        self.stored.extend(other.stored)
        self.held.extend(other.held)
        self.copies.extend(other.copies)
        self.removed += other.removed
        self.precisions |= other.precisions
        for stage, seconds in other.seconds.items():
            self.seconds[stage] += seconds

    def fail(self, problems: list[FileFailure]) -> None:
        """Files that failed before their journey."""
        self.errors += problems
        self.outcomes[Outcome.FAILED] += len(problems)

    def count(self, outcomes: Iterable[tuple[Outcome, str, str, str]], keep_stored: bool = False) -> None:
        """Count each file's (outcome, path, reason, id); with `keep_stored`, remember the stored ones and
        the contents of all."""
        for outcome, path, reason, record_id in outcomes:
            self.outcomes[outcome] += 1
            if outcome == Outcome.FAILED:
                self.errors.append(FileFailure(path, reason))
            if keep_stored and outcome in (Outcome.NEW, Outcome.EXISTING):
                self.stored.append((record_id, path))
            if keep_stored and record_id:
                self.held.append((record_id, path))
            if outcome in (Outcome.EXISTING, Outcome.DUPLICATE):
                self.copies.append((record_id, path))

    @property
    def counts(self) -> dict[str, int]:
        """The counts so far by summary key, as progress reports carry them."""
        return {outcome.summary_key: n for outcome, n in self.outcomes.items() if n}

    @property
    def files(self) -> int:
        """How many files are counted, whatever their outcome."""
        return sum(self.outcomes.values())

    def summary(self) -> dict[str, int]:
        return {"discovered": self.files, **{outcome.summary_key: self.outcomes[outcome] for outcome in Outcome}}

    def stage_seconds(self) -> dict[str, float]:
        return {stage: round(self.seconds.get(stage, 0.0), 3) for stage in (*STAGE_COLUMNS, "write")}


def summary_of(collection: str, tally: Tally, seconds: float, enriched: dict[str, int] | None = None,
               actors: dict | None = None, route: dict | None = None) -> dict:
    """An ingestion's summary, in the order of the line the `ingest` command prints last: `enriched`, the
    records given each costly enrichment asked for (`captioned`); `actors`, the plan of the Ray Data job,
    where one ran; `route`, where the run ran and why."""
    summary = {"collection": collection, **tally.summary(), "removed": tally.removed, **(enriched or {})}
    summary["seconds"] = round(seconds, 2)
    summary["stage_seconds"] = tally.stage_seconds()
    if actors is not None:
        summary["actors"] = actors
    if route is not None:
        summary["route"] = route
    return summary


# The summary is printed as one JSON line, last, starting with its first key: found again in a command's
# output, or a Ray job's log, by `summary_in`.
SUMMARY_START = '{"collection"'


def print_summary(summary: dict) -> None:
    """The line the `ingest` and `watch` commands print last, on stdout."""
    print(json.dumps(summary), flush=True)


def summary_in(output: str) -> dict | None:
    """The last summary line in a command's output or a job's log (other lines may follow it, as a
    job's log has Ray's own); None when there is none."""
    return last_json_line(output, SUMMARY_START)


def last_json_line(output: str, start: str) -> dict | None:
    """The last line starting with `start` (a JSON document's first key), read as JSON; None when there
    is none, or it is cut short."""
    for line in reversed(output.splitlines()):
        if line.startswith(start):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None
