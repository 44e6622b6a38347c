"""Watch: the index follows folders as they change (`python -m ray_pipeline watch PATH...`).

The folders are ingested first, as `ingest --prune` does. From then on, file events (`files.events`:
watchdog's observer, or its polling observer with `--poll` where events do not arrive, as on network
file systems) are gathered until each file has been still for `--settle` seconds. Each settled batch
takes its route (`route.choose_route`): a few files go through the journey every route shares
(`in_process`), embedded by a model kept warm (the Serve app's `Embedder` when `--serve-app` names a
running app that has one, else an embedding actor of the watch's own); a burst of more than
`--inline-max-files` files goes through the Ray Data job. Either way the batch ends with the one sequence
after the files (`steps.after`), where files seen going leave the collection as prune has it, guards
included. SIGINT and SIGTERM end the watch between two batches, with the summary of all it did.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import replace

from ray_pipeline.cluster.runtime import init_ray
from ray_pipeline.core import defaults
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.paths import FileFailure, is_within, path_text
from ray_pipeline.files.events import Changes, Settled, photo_events
from ray_pipeline.files.listing import DiscoveryError, Listing, discover, more_than
from ray_pipeline.records.owner import StoreHandle, long_lived_owner
from ray_pipeline.runs.bulk import ListedInput, run_job
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.in_process import CHUNK, ingest_here
from ray_pipeline.runs.ingest import RunResult, run_ingest
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.runs.route import RouteKind, RunFacts, choose_route
from ray_pipeline.runs.warm import ActorEmbedder, ServedEmbedder
from ray_pipeline.steps.after import After, FilesThrough, after_files
from ray_pipeline.steps.enrich import HerePool, ServedPool, run_queued
from ray_pipeline.steps.pairs import PairsAmong, beside
from ray_pipeline.steps.prune import Pruning, is_gone
from ray_pipeline.steps.summary import Tally, summary_of
from ray_pipeline.steps.unchanged import stored_in

logger = logging.getLogger(__name__)

TICK_S = 0.2  # how often settled changes are looked for
RELIST_S = 600  # the folders are listed again this often (and after each burst): no new file is missed
ATTEMPTS = 3  # a batch that fails is tried again this many times in all, then its files are left out


class WatchError(UserFacingError):
    """The watch cannot go on; the message says why."""


class Watcher:
    """One watch: its folders, what it has done, and the store it writes."""

    def __init__(self, config: RunConfig, settle_s: float, poll_s: float | None):
        for path in config.paths:
            if not os.path.isdir(path):
                raise DiscoveryError(f"not a folder: {path} (watch follows folders)")
        self.config = replace(config, prune=True, paths=tuple(os.path.abspath(os.path.expanduser(p)) for p in config.paths))
        self.folders = list(self.config.paths)
        self.poll_s = poll_s
        # A batch of at most this many files is embedded by the warm model; a larger burst, by a Ray Data job.
        self.batch_limit = self.config.inline_max_files if self.config.inline_max_files is not None else defaults.INLINE_MAX_FILES
        self.changes = Changes(settle_s, burst=self.batch_limit)
        self.stopping = threading.Event()
        self.total = Tally()
        self.enriched: Counter[str] = Counter()  # records given each costly enrichment, by its summary key
        self.route: dict | None = None  # the first ingestion's route
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
                             {e.summary_key: self.enriched[e.summary_key] for e in self.config.enrichments},
                             route=self.route)
        if self.config.progress_id:
            Reporter(self.config.progress_id, self.config.target.collection).finish(summary, self.total.errors)
        return summary

    def _observer(self):
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=self.poll_s) if self.poll_s else Observer()
        for folder in self.folders:
            observer.schedule(photo_events(folder, self.changes), folder, recursive=True)
        return observer

    def _count_first(self, first: RunResult) -> None:
        self.config = first.config  # with the collection's enrichments on by default
        self.total.add(first.tally)
        self.total.errors = list(first.errors)
        self.enriched.update({e.summary_key: first.summary.get(e.summary_key) or 0 for e in self.config.enrichments})
        self.holds = dict(first.holds)
        self.listed_at = time.monotonic()
        self.random_weights = first.random_weights
        self.route = first.route.as_json()
        logger.info("watching %s (%s); stop with Ctrl-C", ", ".join(self.folders),
                    f"polling every {self.poll_s:g} s" if self.poll_s else "file events")

    def _follow(self, observer) -> None:
        logger.info("running on %s", init_ray())
        self.listen_for_stop()
        target, config = self.config.target, self.config
        handle = StoreHandle(target, long_lived_owner(target.folder, detached=False) if target.embedded else None)
        embedder = ServedEmbedder.find(config.serve_app, config.model)
        if embedder is not None:
            logger.info("embedding with the Serve app %r's Embedder", config.serve_app)
        warm = embedder or ActorEmbedder(config.model, config.device, config.compile, CHUNK, config.precision)
        reporter = Reporter(config.progress_id, target.collection)
        try:
            warm.facts()  # warm before the first change comes
            logger.info("ready: changes are embedded as they settle (%g s)", self.changes.settle_s)
            while not self.stopping.wait(TICK_S):
                if not observer.is_alive() or not all(emitter.is_alive() for emitter in observer.emitters):
                    raise WatchError("the file observer stopped (the log says why): changes are no longer seen; "
                                     "start the watch again")
                if time.monotonic() - self.listed_at > RELIST_S:
                    self._list_again()
                settled = self.changes.take_settled()
                if settled:
                    self._apply(settled, handle, warm, reporter)
        finally:
            warm.release()
            reporter.flush()

    def _apply(self, settled: Settled, handle: StoreHandle, warm: ActorEmbedder | ServedEmbedder, reporter: Reporter) -> None:
        """One settled batch: ingest what changed, then the sequence after its files, which prunes what went."""
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
            after = self._ingest(changed, gone, gone_folders, handle, warm, batch, reporter)
        except UserFacingError:
            raise  # the store, the model or the cluster refuses: the watch ends, saying why
        except Exception as exc:  # tried again once it settles anew, a few times
            self._again(changed, gone, gone_folders, exc)
            return
        for path in changed + gone + gone_folders:
            self.attempts.pop(path, None)
        self.holds.update(after.holds)
        for line in after.plan.describe():
            logger.info("%s", line)
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

    def _ingest(self, changed: list[str], gone: list[str], gone_folders: list[str], handle: StoreHandle,
                warm: ActorEmbedder | ServedEmbedder, batch: Tally, reporter: Reporter) -> After:
        """The batch's changed files on their route, then the sequence after them, its prune looking at the
        records of the files changed and gone and under the folders gone; the enrichments asked for last."""
        config, store = self.config, handle.store
        stored = stored_in(store, changed, config.within, read_leftovers=False)
        pruning = Pruning(self.folders, {folder for folder in self.folders if more_than([folder], 0)},
                          force=config.prune_missing_folders, events_seen=True, scan=tuple(gone_folders),
                          at_paths=tuple(changed + gone), known=self.holds, machine=config.machine)
        route = choose_route(RunFacts(to_read=len(stored.left_to_read(changed)), warm_model=True,
                                      inline_max_files=self.batch_limit))
        if route.kind == RouteKind.RAY_DATA:
            logger.info("route: %s (%s)", route.kind.value, route.reason)
            warm.release()  # the Ray Data job needs the GPU and CPUs a model of the watch's own holds
            # Named files, not folders: the job keeps every file's content; the watch's prune looks at them.
            burst = replace(config, progress_id=None, paths=tuple(changed))
            job = run_job(burst, ListedInput(burst, Listing(changed, []), stored, pruning, gone=tuple(gone)), batch)
            reporter.add({"discovered": len(changed), **batch.counts}, batch.errors)  # the job counted its metrics
            self.enriched.update(job.enriched.counts)
            batch.errors += job.enriched.errors
            self._list_again(batch)
            return job.after
        stored.count_into(batch, keep_stored=True)
        reporter.counted(batch, discovered=len(changed))
        if stored.left_to_read(changed):
            facts = warm.facts()
            store = handle.open(facts.collection_metadata)
            batch.add(ingest_here(changed, stored, store, warm, facts.geometry, config.max_pixels, config.within,
                                  config.machine, reporter, keep_stored=True))
        after = after_files(store, FilesThrough.of(stored, PairsAmong(beside(changed)), tuple(gone)), batch, pruning,
                            config.enrichments, config.uploads)
        if after.queued:
            enriched = run_queued(store, after.queued, HerePool(ServedPool(config.serve_app)), reporter)
            self.enriched.update(enriched.counts)
            batch.errors += enriched.errors
        return after

    def _list_again(self, batch: Tally | None = None) -> None:
        """List the folders again (after a burst, and every RELIST_S): a file whose events were lost (a
        kernel queue that overflowed) is taken in all the same. Nothing is taken for gone this way: only
        files seen going, and the next `ingest --prune`, remove records."""
        self.listed_at = time.monotonic()
        failed = {error.path for error in self.total.errors + (batch.errors if batch else [])}
        for path in sorted(set(discover(self.folders, [])) - set(self.holds) - failed):
            self.changes.touched(path)


def run_watch(config: RunConfig, settle_s: float, poll_s: float | None) -> tuple[dict, list[FileFailure], bool]:
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
