"""Outcome: what becomes of each listed file, with the one name it has in each place it is counted."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """A file's outcome. Its value is the row status the pipeline's stages pass on; `summary_key` is its
    count's key in the job summary (and the API's status JSON); `metric` names its files counter
    (`photo_files_<metric>`)."""

    NEW = "new"  # embedded and stored
    EXISTING = "existing"  # stored already, not embedded again
    DUPLICATE = "duplicate"  # a copy of another listed file
    FAILED = "failed"  # cannot be read or decoded; its reason is reported

    @property
    def summary_key(self) -> str:
        return _NAMES[self][0]

    @property
    def metric(self) -> str:
        return _NAMES[self][1]


_NAMES = {
    Outcome.NEW: ("embedded", "embedded"),
    Outcome.EXISTING: ("skipped_existing", "skipped"),
    Outcome.DUPLICATE: ("duplicates", "duplicate"),
    Outcome.FAILED: ("failed", "failed"),
}
