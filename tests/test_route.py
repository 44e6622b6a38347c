"""Where a run runs: one pure function, over a grid of runs and machines."""

from __future__ import annotations

import pytest

from ray_pipeline.runs.route import RouteKind, RunFacts, choose_route

pytestmark = pytest.mark.unit

NONE, HERE, WARM, RAY_DATA = RouteKind.NONE, RouteKind.IN_PROCESS, RouteKind.WARM, RouteKind.RAY_DATA
STREAMED, RAY_JOB, DRY_RUN = RouteKind.STREAMED, RouteKind.RAY_JOB, RouteKind.DRY_RUN


@pytest.mark.parametrize("facts, kind, said", [
    # The command's own ingestions, with no cluster running
    (RunFacts(to_read=0), NONE, "nothing to read"),
    (RunFacts(to_read=0, live_progress=True), NONE, "nothing to read"),  # counts go to the board all the same
    (RunFacts(to_read=0, cluster=True), NONE, "nothing to read"),
    (RunFacts(to_read=0, store_ready=False), HERE, "0 files to read"),  # another model's or an older collection: opened
    (RunFacts(to_read=1), HERE, "1 files to read, no cluster running"),
    (RunFacts(to_read=64), HERE, "at most --inline-max-files (64)"),
    (RunFacts(to_read=65), RAY_DATA, "65 files to read, more than --inline-max-files (64)"),
    (RunFacts(to_read=3, inline_max_files=0), RAY_DATA, "more than --inline-max-files (0)"),
    (RunFacts(to_read=0, store_ready=False, inline_max_files=0), HERE, "0 files to read"),
    (RunFacts(to_read=10**7), RAY_DATA, "a Ray Data job on a local Ray"),
    # What needs the cluster's services, or a cluster that runs
    (RunFacts(to_read=0, enrichments=True), RAY_DATA, "captions need the cluster's Serve app"),
    (RunFacts(to_read=2, live_progress=True), RAY_DATA, "live progress needs the cluster's progress board"),
    (RunFacts(to_read=None, store_ready=False, folder_held=True), RAY_DATA, "held by another process"),
    (RunFacts(to_read=2, cluster=True), RAY_DATA, "a Ray cluster runs"),
    # A watch's batches
    (RunFacts(to_read=0, warm_model=True), WARM, "the watch's warm model"),
    (RunFacts(to_read=64, warm_model=True), WARM, "the watch's warm model"),
    (RunFacts(to_read=65, warm_model=True), RAY_DATA, "a burst of 65 files"),
    # The HTTP API's
    (RunFacts(to_read=16, in_app=True, inline_max_files=16), WARM, "in the app, embedded by its warm Embedder"),
    (RunFacts(to_read=17, in_app=True, inline_max_files=16), RAY_JOB, "more than INGEST_INLINE_MAX_FILES (16)"),
    (RunFacts(to_read=1, in_app=True, prune=True), RAY_JOB, "prune runs as `ingest --prune`"),
    (RunFacts(to_read=0, in_app=True, watch=True), RAY_JOB, "a watch follows its folders until stopped"),
    # Whatever else holds
    (RunFacts(to_read=None, streamed=True, cluster=True), STREAMED, "a Parquet manifest"),
    (RunFacts(to_read=None, dry_run=True, cluster=True), DRY_RUN, "nothing is written"),
])
def test_the_route_and_its_reason(facts, kind, said):
    route = choose_route(facts)
    assert route.kind == kind and said in route.reason
    assert route.as_json() == {"kind": kind.value, "reason": route.reason}
