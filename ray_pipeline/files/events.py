"""File events: what happens in watched folders (watchdog's events), gathered until the files have
settled, for `watch` to take in batches."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

from ray_pipeline.core.formats import SUPPORTED_EXTENSIONS, extension_of
from ray_pipeline.files.listing import discover
from ray_pipeline.files.state import FileState, file_state, file_states

logger = logging.getLogger(__name__)

# While more files are pending than a warm batch takes and events still come, the batch waits for a
# quiet moment (the end of a copy of many files), so that a burst makes one Ray Data job, not many.
# It waits this long at most under a steady stream.
BURST_HOLD_S = 60.0


@dataclass
class Settled:
    """Changes that have settled: files created or changed and now still, and paths gone (files, or
    folders with all they held)."""

    changed: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)  # files
    gone_folders: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.gone or self.gone_folders)


class Changes:
    """File events, gathered until they settle: a path is settled once `settle_s` have passed since its
    last event and its state then is the state it had at that event (a write that sent no event, as
    on a network file system, starts the wait again). A folder gone is handed over only once all events
    are quiet, so that a folder renamed inside the watch is never taken for gone before its files are
    seen at their new place. Thread-safe: the observer adds, the watch takes.

    With `burst` (a number of files), nothing is handed over while more paths than that are pending and
    events still come, for up to BURST_HOLD_S: a copy of many files is taken in one go once it ends."""

    def __init__(self, settle_s: float, burst: int | None = None, clock=time.monotonic):
        self.settle_s = settle_s
        self.burst = burst
        self.clock = clock
        self._lock = threading.Lock()
        self._touched: dict[str, tuple[float, FileState | None]] = {}
        self._gone: dict[str, tuple[float, bool]] = {}  # path -> (its event's time, whether a folder)
        self._last_event = 0.0
        self._busy_since: float | None = None

    def touched(self, path: str) -> None:
        state = file_state(path)
        with self._lock:
            self._last_event = self.clock()
            self._touched[path] = (self._last_event, state)
            self._gone.pop(path, None)

    def gone(self, path: str, folder: bool = False) -> None:
        with self._lock:
            self._last_event = self.clock()
            self._gone[path] = (self._last_event, folder)
            self._touched.pop(path, None)

    def _holding(self, now: float) -> bool:
        """Whether a burst is still arriving (called under the lock)."""
        arriving = (self.burst is not None and len(self._touched) + len(self._gone) > self.burst
                    and now - self._last_event < self.settle_s)
        if not arriving:
            self._busy_since = None
            return False
        self._busy_since = self._busy_since if self._busy_since is not None else now
        return now - self._busy_since < BURST_HOLD_S

    def take_settled(self) -> Settled:
        now = self.clock()
        with self._lock:
            if self._holding(now):
                return Settled()
            quiet = now - self._last_event >= self.settle_s
            ripe = [path for path, (at, _) in self._touched.items() if now - at >= self.settle_s]
            settled = Settled()
            for path, (at, folder) in sorted(self._gone.items()):
                if now - at >= self.settle_s and (quiet or not folder):
                    (settled.gone_folders if folder else settled.gone).append(path)
                    del self._gone[path]
        states = file_states(ripe)  # outside the lock: the observer goes on adding
        with self._lock:
            for path in ripe:
                if path not in self._touched:  # gone meanwhile: the deletion is handed over in its turn
                    continue
                at, seen = self._touched[path]
                if at > now:  # an event came while this was stat'ed: it waits again
                    continue
                if states.get(path) != seen:
                    self._touched[path] = (now, states.get(path))
                    continue
                del self._touched[path]
                settled.changed.append(path)
        settled.changed.sort()
        return settled


def _hidden_below(path: str, root: str) -> bool:
    """Whether a name on the way down from `root` to `path` is hidden (as the walk skips it)."""
    return any(part.startswith(".") for part in os.path.relpath(path, root).split(os.sep))


def photo_events(root: str, changes: Changes):
    """A watchdog event handler that tells `changes` of the photos created, changed, moved and deleted
    under `root`, as the walk would list them (a folder moved in brings every photo it holds). An event
    it cannot handle is logged, never raised: an exception would end watchdog's dispatching thread."""
    from watchdog.events import FileSystemEventHandler

    def photo(path: str) -> bool:
        return extension_of(path) in SUPPORTED_EXTENSIONS and not _hidden_below(path, root)

    class PhotoEvents(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            try:
                self._take(event)
            except Exception as exc:
                logger.warning("file event %s of %r not taken: %s: %s", event.event_type, event.src_path,
                               type(exc).__name__, exc)

        @staticmethod
        def _take(event) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return
            source = os.fsdecode(event.src_path)
            if event.event_type in ("deleted", "moved") and (event.is_directory or photo(source)):
                changes.gone(source, folder=event.is_directory)
            arrived = os.fsdecode(event.dest_path) if event.event_type == "moved" else source
            if event.event_type == "deleted" or not arrived:
                return
            if event.is_directory and event.event_type in ("created", "moved"):
                if not _hidden_below(arrived, root) and os.path.isdir(arrived):
                    for path in discover([arrived]):
                        changes.touched(path)
            elif not event.is_directory and photo(arrived):
                changes.touched(arrived)

    return PhotoEvents()
