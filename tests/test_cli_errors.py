"""The CLI stops with one clear line and a non-zero exit when a job cannot run, before any work."""

from __future__ import annotations

import json
import time

import pytest
from conftest import free_port, summary_of


def test_no_such_path(cli, tmp_path, tiny_model_args):
    completed = cli("ingest", str(tmp_path / "nowhere"), "--collection", "photos", "--chroma-path", str(tmp_path / "c"), *tiny_model_args)
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == f"error: no such file or folder: {tmp_path / 'nowhere'}"


def test_chroma_server_unreachable(cli, tmp_path, tiny_model_args):
    url = f"http://127.0.0.1:{free_port()}"
    completed = cli("ingest", str(tmp_path), "--collection", "photos", "--chroma-url", url, *tiny_model_args)
    assert completed.returncode == 2
    assert f"error: Chroma server {url} is unreachable" in completed.stderr


def test_checkpoint_of_another_architecture(cli, tmp_path, tiny_model):
    completed = cli("ingest", str(tmp_path), "--collection", "photos", "--chroma-path", str(tmp_path / "c"),
                    "--model", "ViT-B-32", "--checkpoint", tiny_model["checkpoint"])
    assert completed.returncode == 2
    assert "does not load into ViT-B-32" in completed.stderr


def test_unknown_pretrained_tag(cli, tmp_path):
    completed = cli("ingest", str(tmp_path), "--collection", "photos", "--chroma-path", str(tmp_path / "c"),
                    "--pretrained", "no_such_tag")
    assert completed.returncode == 2
    assert "unknown pretrained tag 'no_such_tag' for ViT-B-32" in completed.stderr


def test_unavailable_weights_stop_with_advice(cli, tmp_path):
    """No network here: the default ViT-B-32 laion2b weights cannot be fetched."""
    completed = cli("ingest", str(tmp_path), "--collection", "photos", "--chroma-path", str(tmp_path / "c"), timeout=120)
    assert completed.returncode == 2
    assert "cannot load pretrained weights 'laion2b_s34b_b79k' for ViT-B-32" in completed.stderr
    assert "--allow-random-weights" in completed.stderr


def test_random_weights_are_recorded_and_announced(cli, tmp_path, tiny_model):
    from PIL import Image

    Image.new("RGB", (300, 200), (200, 30, 30)).save(tmp_path / "red.png")
    chroma = tmp_path / "c"
    completed = cli("ingest", str(tmp_path / "red.png"), "--collection", "randomly", "--chroma-path", str(chroma),
                    "--model", tiny_model["config"], "--allow-random-weights")
    assert summary_of(completed)["embedded"] == 1
    assert "RANDOM WEIGHTS" in completed.stderr
    import chromadb

    metadata = chromadb.PersistentClient(path=str(chroma)).get_collection("randomly").metadata
    assert metadata["random_weights"] is True
    assert metadata["weights"] == "random:seed=0"
    # A re-run with nothing new still warns.
    again = cli("ingest", str(tmp_path / "red.png"), "--collection", "randomly", "--chroma-path", str(chroma),
                "--model", tiny_model["config"], "--allow-random-weights")
    assert summary_of(again)["skipped_existing"] == 1
    assert "RANDOM WEIGHTS" in again.stderr
    # The search rebuilds the same seeded model from what the collection recorded.
    found = cli("search", "--image", str(tmp_path / "red.png"), "--collection", "randomly", "--chroma-path", str(chroma), "--json")
    assert json.loads(found.stdout)["results"][0]["score"] > 0.999


@pytest.mark.parametrize("args", [["ingest", "--collection", "xyz"], ["search", "--collection", "xyz"],
                                  ["ingest", "p", "--collection", "xyz", "--actors", "3,1"],
                                  ["ingest", "p", "--collection", "xy"], ["search", "cat", "--collection", "bad name!"]])
def test_usage_errors(cli, args):
    completed = cli(*args)
    assert completed.returncode == 2
    assert "usage:" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_embedded_chroma_in_use_is_refused_at_once(cli, tmp_path, tiny_model_args):
    """Another process holding the embedded folder (here: this test, holding its lock)."""
    import fcntl

    from PIL import Image

    from ray_pipeline.records.connection import LOCK_FILE

    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    chroma = tmp_path / "chroma"
    chroma.mkdir()
    with open(chroma / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        completed = cli("ingest", str(tmp_path / "p.png"), "--collection", "busy", "--chroma-path", str(chroma), *tiny_model_args)
    assert completed.returncode == 2
    assert f"embedded Chroma at {chroma} is in use by another process" in completed.stderr
    assert time.monotonic() - started < 60  # refused, not left waiting


def test_caption_without_the_serve_app_is_refused_before_work(cli, tmp_path, tiny_model_args):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    completed = cli("ingest", str(tmp_path / "p.png"), "--collection", "nocaps", "--chroma-path", str(tmp_path / "c"),
                    "--caption", "--serve-app", "no-such-app", *tiny_model_args)
    assert completed.returncode == 2
    assert "--caption needs the Serve application 'no-such-app'" in completed.stderr


def test_a_shell_without_token_auth_is_told_why_the_cluster_refuses_it(cli, tmp_path, tiny_model_args):
    """The session's head uses Ray's token authentication (on by default for `ray start --head`)."""
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    started = time.monotonic()
    completed = cli("ingest", str(tmp_path / "p.png"), "--collection", "tokens", "--chroma-path", str(tmp_path / "c"),
                    *tiny_model_args, env={"RAY_AUTH_MODE": ""})
    assert completed.returncode == 2
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Ray cluster at ") and "uses token authentication" in last
    assert "set RAY_AUTH_MODE=token" in last
    assert time.monotonic() - started < 60  # at once, not after Ray's 20 s of retries


def test_a_shell_without_the_clusters_token_is_told_how_to_get_one(cli, tmp_path, tiny_model_args):
    """A new machine (an empty home) with RAY_AUTH_MODE=token but no token: one line, not Ray's traceback."""
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "p.png")
    (tmp_path / "home").mkdir()
    no_token = {"HOME": str(tmp_path / "home"), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none"), "RAY_AUTH_TOKEN": ""}
    completed = cli("ingest", str(tmp_path / "p.png"), "--collection", "tokens", "--chroma-path", str(tmp_path / "c"),
                    *tiny_model_args, env=no_token)
    assert completed.returncode == 2
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Ray cluster at ") and "uses token authentication" in last
    assert "the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN" in last
    assert "set RAY_AUTH_MODE=token" not in last  # it is set
    assert "Traceback" not in completed.stderr
