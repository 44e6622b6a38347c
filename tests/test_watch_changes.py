"""How `watch` gathers file events into batches, without Ray or a file system: a file is handed over
once it is still, a deletion wins over a write, and a burst is taken in one go."""

from __future__ import annotations

import pytest

from ray_pipeline.files.events import Changes

pytestmark = pytest.mark.unit


def test_changes_settle_once_files_are_still():
    """No Ray: a path is handed over once `settle` has passed since its last event and its state then is
    the state it had; a deletion after a write wins."""
    now = [0.0]
    changes = Changes(settle_s=2.0, clock=lambda: now[0])
    changes.touched("/nowhere/a.jpg")
    changes.touched("/nowhere/b.jpg")
    now[0] = 1.0
    changes.touched("/nowhere/a.jpg")  # still being written
    changes.gone("/nowhere/b.jpg")
    now[0] = 2.5
    settled = changes.take_settled()
    assert (settled.changed, settled.gone) == ([], [])
    now[0] = 3.1
    settled = changes.take_settled()
    assert (settled.changed, settled.gone) == (["/nowhere/a.jpg"], ["/nowhere/b.jpg"])
    assert not changes.take_settled()


def test_a_burst_is_taken_in_one_go_once_it_ends():
    """More files pending than a warm batch takes, and events still coming: nothing is handed over
    until a quiet moment, so the burst makes one Ray Data job (under a steady stream, not for ever)."""
    now = [0.0]
    changes = Changes(settle_s=2.0, burst=3, clock=lambda: now[0])
    for i in range(10):
        now[0] = i * 0.5
        changes.touched(f"/nowhere/{i}.jpg")
        assert not changes.take_settled()  # the first files are still, but more keep coming
    now[0] = 4.5 + 2.0
    assert len(changes.take_settled().changed) == 10
    for i in range(200):  # a stream that never stops is taken all the same
        now[0] = 10.0 + i * 0.5
        changes.touched(f"/nowhere/s{i}.jpg")
        if changes.take_settled():
            break
    assert now[0] - 10.0 >= 60.0 - 0.5


def test_a_folder_renamed_inside_the_watch_is_never_taken_for_gone_before_its_files_arrive():
    """The folder's old name goes with its files' new names in one batch: the records follow them, and
    none is removed and embedded again."""
    now = [0.0]
    changes = Changes(settle_s=2.0, clock=lambda: now[0])
    changes.gone("/nowhere/old", folder=True)
    now[0] = 0.1
    changes.touched("/nowhere/new/a.jpg")
    now[0] = 2.05
    assert not changes.take_settled()  # the old name is ripe, but events came since
    now[0] = 2.2
    settled = changes.take_settled()
    assert (settled.gone_folders, settled.changed) == (["/nowhere/old"], ["/nowhere/new/a.jpg"])
