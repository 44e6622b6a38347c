"""The test fixtures' own failures say why: a Ray head that does not start shows Ray's output."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ray_start_failure

pytestmark = pytest.mark.unit


def test_a_failed_ray_start_shows_rays_own_output(tmp_path):
    ray_bin = str(Path(sys.executable).with_name("ray"))
    started = subprocess.run([ray_bin, "start", "--head", "--num-cpus=two", f"--temp-dir={tmp_path}"],
                             capture_output=True, text=True, timeout=120)
    assert started.returncode != 0
    reason = ray_start_failure(started, str(tmp_path))
    assert reason.startswith(f"`ray start --head` exited with {started.returncode}")
    assert "'two' is not a valid integer" in reason  # Ray's (click's) own words, not a bare CalledProcessError
