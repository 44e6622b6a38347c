"""The progress board's bookkeeping of jobs run in the Serve app, as a plain object (no Ray): a run
ends once, a stop asked in time ends it STOPPED, a run that falls silent is reported lost, and old
runs are let go."""

from __future__ import annotations

import time

import pytest

from ray_pipeline.runs.progress import KEPT_RUNS, RUN_SILENCE_S, ProgressBoard

pytestmark = pytest.mark.unit


def test_a_run_is_settled_once_with_its_counts():
    board = ProgressBoard()
    board.register("job-1", "photos")
    board.add("job-1", {"discovered": 3, "embedded": 2}, [{"path": "/p/x.jpg", "reason": "empty file"}])
    assert board.run("job-1").status == "RUNNING"
    board.finish("job-1", {"collection": "photos", "discovered": 3, "embedded": 2, "failed": 1, "seconds": 1.5},
                 [{"path": "/p/x.jpg", "reason": "empty file"}])
    board.settle("job-1", "SUCCEEDED")
    run = board.run("job-1")
    assert (run.status, run.message) == ("SUCCEEDED", None) and run.end_time >= run.start_time
    assert board.get("job-1")["counts"] == {"discovered": 3, "embedded": 2, "failed": 1}
    assert board.request_stop("job-1") is False  # it has ended


def test_a_stop_asked_in_time_ends_the_run_stopped_even_if_its_last_chunk_got_through():
    board = ProgressBoard()
    board.register("job-2", "photos")
    assert board.request_stop("job-2") is True
    assert board.stop_requested("job-2") is True
    assert board.request_stop("job-2") is False  # asked already
    board.settle("job-2", "SUCCEEDED")
    assert board.run("job-2").status == "STOPPED"


def test_unknown_ids_are_no_error():
    board = ProgressBoard()
    assert board.run("nope") is None and board.get("nope") is None
    assert board.request_stop("nope") is False and board.stop_requested("nope") is False
    board.settle("nope", "FAILED", "error: x")  # a board restarted under a running job: nothing to settle


def test_a_run_silent_too_long_is_reported_lost():
    board = ProgressBoard()
    board.register("job-3", "photos")
    board._runs["job-3"].heard_at -= RUN_SILENCE_S + 1  # as if the app that ran it had stopped long ago
    run = board.run("job-3")
    assert run.status == "FAILED" and "no news from the app" in run.message
    assert board.runs(10)["job-3"].status == "FAILED"
    board.add("job-3", {"embedded": 1}, [])  # news again: it runs after all
    assert board.run("job-3").status == "RUNNING"


def test_runs_of_an_app_that_started_again_are_cut_off_saying_so():
    board = ProgressBoard()
    board.register("before", "photos")
    board.register("ended", "photos")
    board.settle("ended", "SUCCEEDED")
    restarted = time.time()
    board.register("after", "photos")
    board._runs["after"].start_time = restarted + 1
    assert board.cut_off(restarted) == ["before"]
    run = board.run("before")
    assert run.status == "FAILED" and "cut off by a restart of the app" in run.message
    assert board.lines("before", 0)[-1].endswith("FAILED: " + run.message)
    assert (board.run("ended").status, board.run("after").status) == ("SUCCEEDED", "RUNNING")
    board.settle("before", "SUCCEEDED")  # a replica that finished it after all: as it ended
    assert board.run("before").status == "SUCCEEDED"


def test_old_finished_runs_are_let_go():
    board = ProgressBoard()
    board.register("running", "photos")
    for i in range(KEPT_RUNS + 5):
        board.register(f"done-{i}", "photos")
        board.settle(f"done-{i}", "SUCCEEDED")
    assert board.run("running") is not None  # a running one is kept
    assert board.run("done-0") is None and board.get("done-0") is None
    assert board.run(f"done-{KEPT_RUNS + 4}") is not None
    assert len(board.runs(10**6)) == KEPT_RUNS
    newest = list(board.runs(3))
    assert newest == [f"done-{KEPT_RUNS + 4}", f"done-{KEPT_RUNS + 3}", f"done-{KEPT_RUNS + 2}"]
    assert time.time() - board.run(newest[0]).start_time < 60
