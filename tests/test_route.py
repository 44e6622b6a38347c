"""Where a run runs: one pure function, over a grid of runs and machines."""

from __future__ import annotations

import pytest

from ray_pipeline.runs.costs import Machine, decode_seconds, expected
from ray_pipeline.runs.route import RouteKind, RunFacts, choose_route

pytestmark = pytest.mark.unit

NONE, HERE, WARM, RAY_DATA = RouteKind.NONE, RouteKind.IN_PROCESS, RouteKind.WARM, RouteKind.RAY_DATA
STREAMED, RAY_JOB, DRY_RUN = RouteKind.STREAMED, RouteKind.RAY_JOB, RouteKind.DRY_RUN
LAPTOP, WORKSTATION, GPU_BOX = Machine(cpus=2, gpus=0), Machine(cpus=32, gpus=0), Machine(cpus=16, gpus=1)


def jpegs(count: int, machine: Machine, precision: str) -> RunFacts:
    """A run of `count` JPEGs with no cluster running."""
    return RunFacts(to_read=count, decode_s=decode_seconds(["a.jpg"] * count), machine=machine, precision=precision)


@pytest.mark.parametrize("facts, kind, said", [
    # The command's own ingestions, with no cluster running: the expected time of each way decides
    (RunFacts(to_read=0), NONE, "nothing to read"),
    (RunFacts(to_read=0, live_progress=True), NONE, "nothing to read"),  # counts go to the board all the same
    (RunFacts(to_read=0, cluster=True), NONE, "nothing to read"),
    (RunFacts(to_read=0, store_ready=False), HERE, "0 files to read"),  # another model's or an older collection: opened
    (RunFacts(to_read=1, decode_s=0.03), HERE, "1 files to read, no cluster running, expected in this process 3 s"),
    (jpegs(200, LAPTOP, "bf16"), HERE, "in this process 12 s, on a local Ray 24 s"),
    (jpegs(10**5, LAPTOP, "fp32"), HERE, "in this process"),  # 2 cores: threads keep both busy, Ray only adds its start
    (jpegs(200, WORKSTATION, "bf16"), HERE, "in this process"),
    (jpegs(10**5, WORKSTATION, "bf16"), RAY_DATA, "a Ray Data job on a local Ray"),  # more cores than threads keep busy
    (jpegs(2000, GPU_BOX, "fp16"), HERE, "in this process"),
    (jpegs(10**5, GPU_BOX, "fp16"), RAY_DATA, "a Ray Data job on a local Ray"),
    (RunFacts(to_read=65, inline_max_files=64), RAY_DATA, "65 files to read, more than --inline-max-files (64)"),
    (RunFacts(to_read=3, inline_max_files=0), RAY_DATA, "more than --inline-max-files (0)"),
    (RunFacts(to_read=64, inline_max_files=64), HERE, "in this process"),
    (RunFacts(to_read=0, store_ready=False, inline_max_files=0), HERE, "0 files to read"),
    # What needs the cluster's services, or a cluster that runs
    (RunFacts(to_read=0, enrichments=True), RAY_DATA, "captions need the cluster's Serve app"),
    (RunFacts(to_read=2, live_progress=True), RAY_DATA, "live progress needs the cluster's progress board"),
    (RunFacts(to_read=2, cluster=True, app_embedder=True), WARM, "embedded by its Serve app's Embedder"),
    (RunFacts(to_read=2, cluster=True), HERE, "with no Embedder of this model: in this process"),
    (RunFacts(to_read=64, cluster=True), HERE, "at most --inline-max-files (64), on a running cluster"),
    (RunFacts(to_read=65, cluster=True, app_embedder=True), RAY_DATA, "65 files to read, more than --inline-max-files (64), on a running Ray cluster"),
    (RunFacts(to_read=2, cluster=True, app_embedder=True, inline_max_files=0), RAY_DATA, "more than --inline-max-files (0), on a running Ray"),
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


def test_the_costs_cross_over_once_on_a_machine_of_many_cores():
    """In this process wins for few files (Ray's start is not paid), a local Ray for many (its processes
    spread over more cores than threads keep busy); on 2 cores there is no crossover."""
    def ray_is_faster(count: int, machine: Machine) -> bool:
        seconds = expected(decode_seconds(["a.jpg"] * count), count, machine, "bf16")
        return seconds.local_ray < seconds.in_process

    sizes = [10, 100, 1000, 2000, 10**4, 10**6]
    assert [ray_is_faster(n, WORKSTATION) for n in sizes] == [False, False, False, True, True, True]
    assert not any(ray_is_faster(n, LAPTOP) for n in sizes)


def test_raw_files_cost_more_to_decode_than_jpegs():
    assert decode_seconds(["a.DNG", "b.nef"]) > 4 * decode_seconds(["a.jpg", "b.JPEG"])
    assert decode_seconds(["x.heic"]) > decode_seconds(["x.png"]) > decode_seconds(["x.jpg"])
