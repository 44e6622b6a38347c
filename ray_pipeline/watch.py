"""Watch: the index follows folders as they change (`python -m ray_pipeline watch PATH...`).

The folders are ingested first, as `ingest --prune` does. From then on, file events (`file_events`:
watchdog's observer, or its polling observer with `--poll` where events do not arrive, as on network
file systems) are gathered until each file has been still for `--settle` seconds. Each settled batch
is a small ingestion through the journey every path shares (`inline`), embedded by a model kept warm:
the Serve app's `Embedder` when `--serve-app` names a running app that has one, else an embedding actor
of the watch's own. A burst of more than `--inline-max-files` files goes through the Ray Data job
instead. Files seen going leave the collection as prune has it, guards included. SIGINT and SIGTERM end
the watch between two batches, with the summary of all it did.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import replace

from ray_pipeline.config import IngestConfig
from ray_pipeline.discover import DiscoveryError, Listing, discover, is_within, more_than
from ray_pipeline.errors import UserFacingError
from ray_pipeline.file_events import Changes, Settled, photo_events
from ray_pipeline.file_names import FileFailure, path_text
from ray_pipeline.ingest import AfterFiles, IngestResult, run_ingest
from ray_pipeline.pairs import beside, pair_records
from ray_pipeline.prune import is_gone, plan_prune
from ray_pipeline.store import StoreHandle
from ray_pipeline.summary import Tally, summary_of
from ray_pipeline.unchanged import Stored

logger = logging.getLogger(__name__)

TICK_S = 0.2  # how often settled changes are looked for
EMBEDDER = "Embedder"
MODEL_WAIT_S = 600  # the longest a model may take to load (a GPU still held elsewhere: the watch says so)
RELIST_S = 600  # the folders are listed again this often (and after each burst): no new file is missed
ATTEMPTS = 3  # a batch that fails is tried again this many times in all, then its files are left out


class WatchError(UserFacingError):
    """The watch cannot go on; the message says why."""


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
            try:
                self._model = (self._embedder.model.remote().result(timeout_s=MODEL_WAIT_S) if self._embedder is not None
                               else ray.get(self._actor.model.remote(), timeout=MODEL_WAIT_S))
            except ray.exceptions.GetTimeoutError:
                raise WatchError(f"the watch's model did not start in {MODEL_WAIT_S} s: is the GPU (or the CPU) it "
                                 "asked for held by something else?") from None
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

        # A GPU only where one is free now: a GPU the Serve app holds part of would leave it waiting.
        gpu = self.config.device != "cpu" and ray.available_resources().get("GPU", 0) >= 1
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
            self._actor = self._model = None


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
        self.captioned = 0
        self.holds: dict[str, str] = {}  # {path: id} of every file of the folders whose bytes are known
        self.attempts: dict[str, int] = {}  # path -> failed attempts of the batches it was in
        self.random_weights = False
        self.listed_at = 0.0

    def stop(self, *_) -> None:
        """The first SIGINT or SIGTERM ends the watch after the batch in hand; a second one, at once."""
        self.stopping.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)

    def listen_for_stop(self) -> None:
        """SIGINT and SIGTERM end the watch between two batches. Set again once Ray is up: its core
        worker puts in a SIGTERM handler of its own that ends the process at once."""
        if not self.stopping.is_set():
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
                self._follow(observer)
        finally:
            observer.stop()
            observer.join(timeout=10)
        summary = summary_of(self.config.target.collection, self.total, time.monotonic() - started,
                             self.captioned if self.config.caption else None)
        if self.config.progress_id:
            from ray_pipeline.progress import Reporter

            Reporter(self.config.progress_id).finish(summary, self.total.errors)
        return summary

    def _observer(self):
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.poll_s) if self.poll_s else Observer()
        for folder in self.folders:
            observer.schedule(photo_events(folder, self.changes), folder, recursive=True)
        return observer

    def _count_first(self, first: IngestResult) -> None:
        self.total.add(first.tally)
        self.total.errors = list(first.errors)
        self.captioned = first.summary.get("captioned") or 0
        self.holds = dict(first.holds)
        self.listed_at = time.monotonic()
        self.random_weights = first.random_weights
        logger.info("watching %s (%s); stop with Ctrl-C", ", ".join(self.folders),
                    f"polling every {self.poll_s:g} s" if self.poll_s else "file events")

    def _follow(self, observer) -> None:
        from ray_pipeline.progress import Reporter
        from ray_pipeline.runtime import init_ray
        from ray_pipeline.store import StoreHandle, long_lived_owner

        logger.info("running on %s", init_ray())
        self.listen_for_stop()
        target = self.config.target
        owner = long_lived_owner(target.folder, detached=False) if target.embedded else None
        store = StoreHandle(target, owner)
        encoder = WarmEncoder(self.config)
        reporter = Reporter(self.config.progress_id)
        try:
            encoder.model()  # warm before the first change comes
            logger.info("ready: changes are embedded as they settle (%g s)", self.changes.settle_s)
            while not self.stopping.wait(TICK_S):
                if not observer.is_alive() or not all(emitter.is_alive() for emitter in observer.emitters):
                    raise WatchError("the file observer stopped (the log says why): changes are no longer seen; "
                                     "start the watch again")
                if time.monotonic() - self.listed_at > RELIST_S:
                    self._list_again()
                settled = self.changes.take_settled()
                if settled:
                    self._apply(settled, store, encoder, reporter)
        finally:
            encoder.release()
            reporter.flush()

    def _apply(self, settled: Settled, store: StoreHandle, encoder: WarmEncoder, reporter) -> None:
        """One settled batch: ingest what changed, prune what went."""
        started = time.monotonic()
        batch = Tally()
        changed = [path for path in settled.changed if os.path.lexists(path)]
        gone = [path for path in settled.gone if is_gone(path)]
        gone_folders = [path for path in settled.gone_folders if is_gone(path)]
        for path in gone:
            self.holds.pop(path, None)
        for folder in gone_folders:
            for known in [known for known in self.holds if is_within(known, (folder,))]:
                del self.holds[known]
        try:
            if changed:
                self._ingest(changed, store, encoder, batch, reporter)
            self._prune(changed + gone, gone_folders, store, batch)
            store.remember_failures([], gone)  # what failed there is forgotten with the file
        except UserFacingError:
            raise  # the store, the model or the cluster refuses: the watch ends, saying why
        except Exception as exc:  # tried again once it settles anew, a few times
            self._again(changed, gone, gone_folders, exc)
            return
        for path in changed + gone + gone_folders:
            self.attempts.pop(path, None)
        reporter.add({"removed": batch.removed}, [])
        self.total.add(batch)
        counts = batch.summary()
        logger.info("%d changed, %d gone: %d embedded, %d stored already, %d copies, %d failed, %d removed (%.1f s)",
                    len(changed), len(gone), counts["embedded"], counts["skipped_existing"], counts["duplicates"],
                    counts["failed"], batch.removed, time.monotonic() - started)

    def _again(self, changed: list[str], gone: list[str], gone_folders: list[str], exc: Exception) -> None:
        """A batch that failed goes back to wait, path by path, until its paths have failed ATTEMPTS times."""
        logger.warning("a batch of %d changed and %d gone paths failed: %s: %s", len(changed), len(gone) + len(gone_folders),
                       type(exc).__name__, exc)
        for path in changed + gone + gone_folders:
            self.attempts[path] = self.attempts.get(path, 0) + 1
            if self.attempts[path] >= ATTEMPTS:
                logger.error("left out after %d failed attempts: %s (the next run of `ingest --prune` or `watch` "
                             "takes it again)", ATTEMPTS, path_text(path))
                del self.attempts[path]
            elif path in changed:
                self.changes.touched(path)
            else:
                self.changes.gone(path, folder=path in gone_folders)

    def _ingest(self, paths: list[str], store: StoreHandle, encoder: WarmEncoder, batch: Tally, reporter) -> None:
        from ray_pipeline.unchanged import stored_in

        stored = stored_in(store, paths, self.config.within, read_leftovers=False)
        if len(stored.left_to_read(paths)) > self.config.inline_max_files:
            self._burst(paths, stored, encoder, batch, reporter)
        else:
            self._ingest_warm(paths, stored, store, encoder, batch, reporter)
        if self.config.caption and batch.stored:
            from ray_pipeline.caption import caption_records

            captioned, errors = caption_records(store, batch.stored, self.config.serve_app, reporter)
            self.captioned += captioned
            batch.errors += errors

    def _ingest_warm(self, paths: list[str], stored: Stored, store: StoreHandle, encoder: WarmEncoder, batch: Tally, reporter) -> None:
        """A few files: their journeys here, the vectors from the warm model."""
        from ray_pipeline.inline import ingest_left_to_read, report_chunk
        from ray_pipeline.metrics import count_files

        collection = self.config.target.collection
        stored.count_into(batch, keep_stored=True)
        reporter.add({"discovered": len(paths), **batch.counts}, batch.errors)
        count_files(collection, batch.outcomes, discovered=len(paths))
        if stored.left_to_read(paths):
            model = encoder.model()
            store.open(model.collection_metadata)
            batch.add(ingest_left_to_read(paths, stored, store, model.geometry, self.config.max_pixels, self.config.within,
                                          encoder.encode, True, lambda files, chunk: report_chunk(collection, reporter, files, chunk)))
        stored.remember(store, batch)
        stored.add_copies(store, batch)
        pair_records(store, beside(paths))
        self.holds.update(stored.holds())
        self.holds.update((path, record_id) for record_id, path in batch.held)

    def _burst(self, paths: list[str], stored, encoder: WarmEncoder, batch: Tally, reporter) -> None:
        """Many files at once: the Ray Data job, as `ingest` runs it, with the watch's own actor released."""
        from ray_pipeline.pipeline import ListedInput, run_pipeline

        logger.info("a burst of %d files: through the Ray Data job", len(paths))
        encoder.release()
        # Named files, not folders: the job keeps every file's content and prunes nothing itself.
        burst = replace(self.config, caption=False, progress_id=None, paths=tuple(paths))
        listing, job = Listing(paths, []), Tally()
        after = AfterFiles(burst, listing)
        run_pipeline(burst, ListedInput(burst, listing, stored, after), job)
        reporter.add({"discovered": len(paths), **job.counts}, job.errors)
        self.holds.update(after.holds)
        batch.add(job)
        self._list_again(batch)

    def _list_again(self, batch: Tally | None = None) -> None:
        """List the folders again (after a burst, and every RELIST_S): a file whose events were lost (a
        kernel queue that overflowed) is taken in all the same. Nothing is taken for gone this way: only
        files seen going, and the next `ingest --prune`, remove records."""
        self.listed_at = time.monotonic()
        failed = {error.path for error in self.total.errors + (batch.errors if batch else [])}
        for path in sorted(set(discover(self.folders, [])) - set(self.holds) - failed):
            self.changes.touched(path)

    def _prune(self, paths: list[str], gone_folders: list[str], store: StoreHandle, batch: Tally) -> None:
        """The records of files gone, or changed to other bytes, leave (or follow a copy), as prune has it."""
        records = store.records_at(paths) if paths else {}
        if gone_folders:
            records.update(store.records_under(gone_folders))
        if not records:
            return
        has_photos = {folder for folder in self.folders if more_than([folder], 0)}
        plan = plan_prune(records, self.holds, self.folders, has_photos, force=self.config.prune_missing_folders,
                          events_seen=True)
        for line in plan.describe():
            logger.info("%s", line)
        plan.apply(store)
        batch.removed += len(plan.removals)


def run_watch(config: IngestConfig, settle_s: float, poll_s: float | None) -> tuple[dict, list[FileFailure], bool]:
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
