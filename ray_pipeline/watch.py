"""Watch: the index follows folders as they change (`python -m ray_pipeline watch PATH...`).

The folders are ingested first, as `ingest --prune` does. From then on, file events (watchdog's
observer, or its polling observer with `--poll` where events do not arrive, as on network file
systems) are gathered until each file has been still for `--settle` seconds. Each settled batch is a
small ingestion through the journey every path shares (`inline`), embedded by a model kept warm: the
Serve app's `Embedder` when `--serve-app` names a running app that has one, else an embedding actor of
the watch's own. A burst of more than `--inline-max-files` files goes through the Ray Data job instead.
Files gone leave the collection as prune has it, guards included. SIGINT and SIGTERM end the watch
between two batches, with the summary of all it did.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace

from ray_pipeline.config import IngestConfig
from ray_pipeline.discover import SUPPORTED_EXTENSIONS, DiscoveryError, discover, extension_of, is_within, more_than
from ray_pipeline.failures import FileState, file_state, file_states
from ray_pipeline.file_names import recorded_path
from ray_pipeline.ingest import AfterFiles, IngestResult, run_ingest
from ray_pipeline.prune import plan_prune
from ray_pipeline.summary import Tally, summary_of

logger = logging.getLogger(__name__)

TICK_S = 0.2  # how often settled changes are looked for
# While more files are pending than a warm batch takes and events still come, the batch waits for a
# quiet moment (the end of a copy of many files), so that a burst makes one Ray Data job, not many.
# It waits this long at most under a steady stream.
BURST_HOLD_S = 60.0
EMBEDDER = "Embedder"


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
    on a network file system, starts the wait again). Thread-safe: the observer adds, the watch takes.

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

    def pending(self) -> int:
        with self._lock:
            return len(self._touched) + len(self._gone)

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
            ripe = [path for path, (at, _) in self._touched.items() if now - at >= self.settle_s]
            settled = Settled()
            for path, (at, folder) in sorted(self._gone.items()):
                if now - at >= self.settle_s:
                    (settled.gone_folders if folder else settled.gone).append(path)
                    del self._gone[path]
        states = file_states(ripe)  # outside the lock: the observer goes on adding
        with self._lock:
            for path in ripe:
                at, seen = self._touched.get(path, (now, None))
                if at > now:  # an event came while this was stat'ed: it waits again
                    continue
                if states.get(path) != seen:
                    self._touched[path] = (now, states.get(path))
                    continue
                del self._touched[path]
                settled.changed.append(path)
        settled.changed.sort()
        return settled


def _is_photo(path: str, root: str) -> bool:
    """A file the walk would list: a photo extension, and no hidden name on its way down from `root`."""
    relative = os.path.relpath(path, root)
    return extension_of(path) in SUPPORTED_EXTENSIONS and not any(part.startswith(".") for part in relative.split(os.sep))


def _handler(root: str, changes: Changes):
    """A watchdog event handler that tells `changes` of the photos created, changed, moved and deleted
    under `root` (a folder moved in brings every photo it holds)."""
    from watchdog.events import FileSystemEventHandler

    class PhotoEvents(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return
            source = os.fsdecode(event.src_path)
            if event.event_type in ("deleted", "moved"):
                if event.is_directory or _is_photo(source, root):
                    changes.gone(source, folder=event.is_directory)
            arrived = os.fsdecode(event.dest_path) if event.event_type == "moved" else source
            if event.event_type == "deleted" or not arrived:
                return
            if event.is_directory and event.event_type in ("created", "moved"):
                for path in discover([arrived]):
                    changes.touched(path)
            elif not event.is_directory and _is_photo(arrived, root):
                changes.touched(arrived)

    return PhotoEvents()


class WarmEncoder:
    """The watch's model, started on first use and kept: the Serve app's Embedder when the app runs one
    of this model, else an embedding actor of the watch's own (released for a burst, whose Ray Data
    job needs the GPU and CPUs it holds)."""

    def __init__(self, config: IngestConfig):
        self.config = config
        self._actor = None
        self._embedder = None
        self._model = None

    def model(self):
        """The `EmbedderModel` of whichever model embeds: its collection metadata and input size."""
        import ray

        if self._embedder is None and self._actor is None:
            self._embedder = self._serve_embedder()
            if self._embedder is None:
                self._actor = self._start_actor()
        if self._model is None:
            self._model = (self._embedder.model.remote().result(timeout_s=300) if self._embedder is not None
                           else ray.get(self._actor.model.remote()))
        return self._model

    def encode(self, pixels):
        import ray

        if self._embedder is not None:
            return self._embedder.embed_images.remote(pixels).result(timeout_s=300)
        return ray.get(self._actor.encode.remote(pixels))

    def _serve_embedder(self):
        """The Serve app's Embedder, when it runs one for this collection's model."""
        from ray import serve

        from ray_pipeline.model import recorded_identity
        from ray_pipeline.store import MODEL_KEYS

        try:
            embedder = serve.get_deployment_handle(EMBEDDER, app_name=self.config.serve_app)
            facts = embedder.model.remote().result(timeout_s=60)
        except Exception:  # no Serve, no such app, or no Embedder in it
            return None
        identity = recorded_identity(self.config.model)
        if identity is not None and any(facts.collection_metadata.get(key) != identity[key] for key in MODEL_KEYS):
            logger.info("the Serve app %r embeds with another model: the watch starts a model of its own", self.config.serve_app)
            return None
        logger.info("embedding with the Serve app %r's Embedder", self.config.serve_app)
        return embedder

    def _start_actor(self):
        import ray

        from ray_pipeline.embed import WarmImageEncoder
        from ray_pipeline.inline import CHUNK

        gpu = self.config.device != "cpu" and ray.cluster_resources().get("GPU", 0) >= 1
        threads = max(1, int(ray.available_resources().get("CPU", 1)))
        logger.info("starting the watch's own embedding actor (%s)", "GPU" if gpu else "CPU")
        return (ray.remote(WarmImageEncoder)
                .options(num_gpus=1 if gpu else 0, num_cpus=0)
                .remote(self.config.model, "cuda" if gpu else "cpu", self.config.compile, CHUNK, threads))

    def release(self) -> None:
        """Give back what the watch's own actor holds (it starts again when needed)."""
        import ray

        if self._actor is not None:
            ray.kill(self._actor)
            self._actor = None


class Watcher:
    """One watch: its folders, what it has done, and the store it writes."""

    def __init__(self, config: IngestConfig, settle_s: float, poll_s: float | None):
        for path in config.paths:
            if not os.path.isdir(path):
                raise DiscoveryError(f"not a folder: {path} (watch follows folders)")
        self.config = replace(config, prune=True, paths=tuple(os.path.abspath(os.path.expanduser(p)) for p in config.paths))
        self.folders = list(self.config.paths)
        self.poll_s = poll_s
        self.changes = Changes(settle_s, burst=self.config.inline_max_files)
        self.stopping = threading.Event()
        self.total = Tally()
        self.holds: dict[str, str] = {}  # {path: id} of every file of the folders whose bytes are known
        self.random_weights = False

    def stop(self, *_) -> None:
        self.stopping.set()

    def listen_for_stop(self) -> None:
        """SIGINT and SIGTERM end the watch between two batches. Set again once Ray is up: its core
        worker puts in a SIGTERM handler of its own that ends the process at once."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.stop)

    def run(self) -> dict:
        """Ingest the folders, then follow them until `stop`; returns the summary of everything."""
        started = time.monotonic()
        observer = self._observer()
        observer.start()  # before the first ingestion: nothing created meanwhile is missed
        try:
            first = run_ingest(self.config)
            self._count_first(first)
            if not self.stopping.is_set():
                self._follow()
        finally:
            observer.stop()
            observer.join(timeout=10)
        summary = summary_of(self.config.target.collection, self.total, time.monotonic() - started)
        if self.config.progress_id:
            from ray_pipeline.progress import Reporter

            Reporter(self.config.progress_id).finish(summary, self.total.errors)
        return summary

    def _observer(self):
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.poll_s) if self.poll_s else Observer()
        for folder in self.folders:
            observer.schedule(_handler(folder, self.changes), folder, recursive=True)
        return observer

    def _count_first(self, first: IngestResult) -> None:
        self.total.add(first.tally)
        self.total.errors = list(first.errors)
        self.holds = dict(first.holds)
        self.random_weights = first.random_weights
        logger.info("watching %s (%s); stop with Ctrl-C", ", ".join(self.folders),
                    f"polling every {self.poll_s:g} s" if self.poll_s else "file events")

    def _follow(self) -> None:
        from ray_pipeline.progress import Reporter
        from ray_pipeline.runtime import init_ray
        from ray_pipeline.store import StoreHandle, long_lived_owner

        logger.info("running on %s", init_ray())
        self.listen_for_stop()
        target = self.config.target
        owner = long_lived_owner(target.path, detached=False) if target.embedded else None
        store = StoreHandle(target, owner)
        encoder = WarmEncoder(self.config)
        reporter = Reporter(self.config.progress_id)
        try:
            encoder.model()  # warm before the first change comes
            logger.info("ready: changes are embedded as they settle (%g s)", self.changes.settle_s)
            while not self.stopping.wait(TICK_S):
                settled = self.changes.take_settled()
                if settled:
                    self._apply(settled, store, encoder, reporter)
        finally:
            encoder.release()
            reporter.flush()

    def _apply(self, settled: Settled, store, encoder: WarmEncoder, reporter) -> None:
        """One settled batch: ingest what changed, prune what went."""
        started = time.monotonic()
        batch = Tally()
        changed = [path for path in settled.changed if os.path.lexists(path)]
        gone = [path for path in settled.gone if not os.path.lexists(path)]
        gone_folders = [path for path in settled.gone_folders if not os.path.lexists(path)]
        for path in gone:
            self.holds.pop(path, None)
        for folder in gone_folders:
            for known in [known for known in self.holds if is_within(known, (folder,))]:
                del self.holds[known]
        try:
            if changed:
                self._ingest(changed, store, encoder, batch, reporter)
            self._prune(changed + gone, gone_folders, store, batch)
        except Exception as exc:  # the watch goes on; the batch is tried again once it settles anew
            logger.warning("a batch of %d changed and %d gone paths failed (tried again): %s: %s", len(changed),
                           len(gone) + len(gone_folders), type(exc).__name__, exc)
            for path in changed:
                self.changes.touched(path)
            for path in gone + gone_folders:
                self.changes.gone(path, folder=path in gone_folders)
            return
        reporter.add({"removed": batch.removed}, [])
        self.total.add(batch)
        counts = batch.summary()
        logger.info("%d changed, %d gone: %d embedded, %d stored already, %d copies, %d failed, %d removed (%.1f s)",
                    len(changed), len(gone), counts["embedded"], counts["skipped_existing"], counts["duplicates"],
                    counts["failed"], batch.removed, time.monotonic() - started)

    def _ingest(self, paths: list[str], store, encoder: WarmEncoder, batch: Tally, reporter) -> None:
        from ray_pipeline.unchanged import stored_in

        stored = stored_in(store, paths, self.config.within, read_leftovers=False)
        if len(stored.left_to_read(paths)) > self.config.inline_max_files:
            self._burst(paths, stored, encoder, batch, reporter)
        else:
            self._ingest_warm(paths, stored, store, encoder, batch, reporter)
        if self.config.caption and batch.stored:
            from ray_pipeline.caption import caption_records

            captioned, errors = caption_records(store, batch.stored, self.config.serve_app, reporter)
            batch.errors += errors

    def _ingest_warm(self, paths: list[str], stored, store, encoder: WarmEncoder, batch: Tally, reporter) -> None:
        """A few files: their journeys here, the vectors from the warm model."""
        from ray_pipeline.inline import ingest_inline, report_chunk
        from ray_pipeline.journey import DuplicateRegistry, Journey
        from ray_pipeline.metrics import count_files

        collection = self.config.target.collection
        stored.count_into(batch, keep_stored=True)
        reporter.add({"discovered": len(paths), **batch.counts}, batch.errors)
        count_files(collection, {"discovered": len(paths), **batch.counts})
        to_read = stored.left_to_read(paths)
        if to_read:
            model = encoder.model()
            store.open(model.collection_metadata)
            registry = DuplicateRegistry()
            registry.claim(stored.claims())
            journey = Journey(store, registry.claim, model.geometry, self.config.max_pixels, self.config.within)
            batch.add(ingest_inline(to_read, journey, encoder.encode, store, keep_stored=True,
                                    on_chunk=lambda files, chunk: report_chunk(collection, reporter, files, chunk)))
        stored.remember(store, batch)
        self.holds.update(stored.holds())
        self.holds.update((path, record_id) for record_id, path in batch.held)

    def _burst(self, paths: list[str], stored, encoder: WarmEncoder, batch: Tally, reporter) -> None:
        """Many files at once: the Ray Data job, as `ingest` runs it, with the watch's own actor released."""
        from ray_pipeline.pipeline import run_pipeline

        logger.info("a burst of %d files: through the Ray Data job", len(paths))
        encoder.release()
        # Named files, not folders: the job keeps every file's content and prunes nothing itself.
        burst = replace(self.config, caption=False, progress_id=None, paths=tuple(paths))
        job, after = Tally(), AfterFiles(burst, paths, [])
        run_pipeline(burst, paths, stored, job, after)
        reporter.add({"discovered": len(paths), **job.counts}, job.errors)
        self.holds.update(after.holds)
        batch.add(job)
        self._reconcile(batch)

    def _reconcile(self, batch: Tally) -> None:
        """After a burst, the folders are listed again: a file whose events were lost (a kernel queue
        that overflowed) is taken in all the same, and one gone unseen goes."""
        failed = {recorded_path(error) for error in self.total.errors + batch.errors}
        listed = set(discover(self.folders, []))
        for path in sorted(listed - set(self.holds) - failed):
            self.changes.touched(path)
        for path in sorted(set(self.holds) - listed):
            self.changes.gone(path)

    def _prune(self, paths: list[str], gone_folders: list[str], store, batch: Tally) -> None:
        """The records of files gone, or changed to other bytes, leave (or follow a copy), as prune has it."""
        records = store.records_at(paths) if paths else {}
        if gone_folders:
            records.update(store.records_under(gone_folders))
        if not records:
            return
        has_photos = {folder for folder in self.folders if more_than([folder], 0)}
        plan = plan_prune(records, self.holds, self.folders, has_photos, force=self.config.prune_missing_folders)
        for line in plan.describe():
            logger.info("%s", line)
        plan.apply(store)
        batch.removed += len(plan.removals)


def run_watch(config: IngestConfig, settle_s: float, poll_s: float | None) -> tuple[dict, list[dict], bool]:
    """Watch until SIGINT or SIGTERM; returns (the summary, the failed files, whether the weights are random)."""
    watcher = Watcher(config, settle_s, poll_s)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    watcher.listen_for_stop()
    try:
        summary = watcher.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return summary, watcher.total.errors, watcher.random_weights
