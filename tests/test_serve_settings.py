"""The application's configuration: it refuses to start without a token unless told to; its model and store are
those the CLI takes, and its ingestion jobs' command lines ask for them."""

from __future__ import annotations

import dataclasses
import shlex
import sys

import pytest

from ray_pipeline.cli import _config, build_parser
from ray_pipeline.core import defaults
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.records.target import StoreTarget
from serve_deployments.jobs import ingest_entrypoint, write_paths
from serve_deployments.settings import Secret, Settings, SettingsError

pytestmark = pytest.mark.unit


def test_refuses_to_start_without_a_token(monkeypatch):
    for name in ("INGEST_API_TOKEN", "INGEST_API_TOKEN_FILE", "INGEST_ALLOW_NO_AUTH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SettingsError, match="INGEST_API_TOKEN"):
        Settings.from_env()
    monkeypatch.setenv("INGEST_ALLOW_NO_AUTH", "1")
    assert Settings.from_env().token is None


def test_token_from_a_file_never_shows(monkeypatch, tmp_path):
    (tmp_path / "token").write_text("s3cret-token\n")
    monkeypatch.setenv("INGEST_API_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("INGEST_ALLOWED_ROOTS", f"{tmp_path}/a:{tmp_path}/b")
    settings = Settings.from_env()
    assert settings.token == "s3cret-token"
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(Secret("s3cret"))
    assert settings.allowed_roots == (f"{tmp_path}/a", f"{tmp_path}/b")


MODEL_VARIABLES = ("CLIP_MODEL", "CLIP_PRETRAINED", "CLIP_CHECKPOINT", "ALLOW_RANDOM_WEIGHTS", "CHROMA_PATH", "CHROMA_URL",
                   "CLIP_EXTRA_MODELS")


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """An app's environment with no token and no GPU question (no torch import): each test adds its own."""
    for name in MODEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in {"INGEST_ALLOW_NO_AUTH": "1", "INGEST_ALLOWED_ROOTS": str(tmp_path / "photos"),
                        "INGEST_UPLOAD_DIR": str(tmp_path / "uploads"), "EMBED_NUM_GPUS": "0", "CAPTION_NUM_GPUS": "0"}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_a_checkpoint_excludes_a_pretrained_tag(environment, tmp_path):
    assert ModelSpec.asked() == ModelSpec(defaults.MODEL, defaults.PRETRAINED, None, False)
    assert ModelSpec.asked("RN50", defaults.PRETRAINED, "w.pt") == ModelSpec("RN50", None, "w.pt", False)
    assert ModelSpec.asked(pretrained="") == ModelSpec(defaults.MODEL, None, None, False)  # no tag: random weights, if allowed
    assert Settings.from_env().model == ModelSpec.asked()
    environment.setenv("CLIP_PRETRAINED", "openai")
    environment.setenv("CLIP_CHECKPOINT", str(tmp_path / "w.pt"))
    assert Settings.from_env().model == ModelSpec(defaults.MODEL, None, str(tmp_path / "w.pt"), False)
    parser = build_parser()
    args = parser.parse_args(["ingest", "photos", "--collection", "photos", "--checkpoint", "w.pt"])
    assert _config(args, parser).model == ModelSpec(defaults.MODEL, None, "w.pt", False)  # the CLI's default tag is left out


def test_the_apps_other_models(environment):
    """CLIP_EXTRA_MODELS: each `ARCHITECTURE@WEIGHTS`, a tag or a checkpoint file; a label names its model back."""
    assert Settings.from_env().models == (ModelSpec.asked(),)
    environment.setenv("CLIP_EXTRA_MODELS", "ViT-L-14@laion2b_s32b_b82k, RN50@/models/rn50.pt,ViT-B-32@laion2b_s34b_b79k,"
                                            "ViT-S-16@w.safetensors")
    environment.setenv("ALLOW_RANDOM_WEIGHTS", "1")
    models = Settings.from_env().models
    assert models[1:] == (ModelSpec("ViT-L-14", "laion2b_s32b_b82k", None, True), ModelSpec("RN50", None, "/models/rn50.pt", True),
                          ModelSpec("ViT-S-16", None, "w.safetensors", True))  # the default named again: once
    assert [ModelSpec.from_label(spec.label, True) for spec in models] == list(models)
    for wrong in ("ViT-L-14", "@laion2b", "ViT-L-14;laion"):
        environment.setenv("CLIP_EXTRA_MODELS", wrong)
        with pytest.raises(SettingsError, match="CLIP_EXTRA_MODELS: .*expected ARCHITECTURE@WEIGHTS"):
            Settings.from_env()


def test_the_store_from_the_environment(environment, tmp_path):
    environment.setenv("CHROMA_PATH", str(tmp_path / "link"))
    (tmp_path / "chroma").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "chroma")
    settings = Settings.from_env()
    assert settings.store == StoreTarget(collection="", path=str(tmp_path / "chroma"))
    assert settings.target("photos") == StoreTarget(collection="photos", path=str(tmp_path / "chroma"))
    environment.setenv("CHROMA_URL", "http://chroma:8000")
    assert Settings.from_env().target("photos") == StoreTarget(collection="photos", url="http://chroma:8000")
    environment.setenv("CHROMA_URL", "http://chroma-0.chroma:8000,http://chroma-1.chroma:8000")
    assert Settings.from_env().target("photos").shards() == [
        StoreTarget("photos", url="http://chroma-0.chroma:8000"), StoreTarget("photos", url="http://chroma-1.chroma:8000")]
    environment.setenv("CHROMA_URL", "http://chroma-0.chroma:8000,")
    with pytest.raises(SettingsError, match="CHROMA_URL: Chroma server list 'http://chroma-0.chroma:8000,': an empty URL"):
        Settings.from_env()


@pytest.mark.parametrize("store, model", [
    (StoreTarget("", path="/data/chroma"), ModelSpec.asked()),
    (StoreTarget("", url="http://chroma:8000"), ModelSpec.asked("/models/tiny.json", None, "/models/tiny.pt", True)),
    (StoreTarget("", url="http://chroma-0.chroma:8000,http://chroma-1.chroma:8000"), ModelSpec.asked()),
    (StoreTarget("", path="/data/chroma"), ModelSpec.asked("ViT-B-16", "openai")),
    (StoreTarget("", path="/data/chroma"), ModelSpec.asked(pretrained="", allow_random_weights=True)),
])
@pytest.mark.parametrize("command", ["ingest", "watch"])
def test_a_job_runs_the_cli_with_the_apps_model_and_store(store, model, command, tmp_path):
    """The job's command line, read back by the CLI's own parser, asks for the app's very model and store."""
    settings = Settings(token=None, allowed_roots=("/photos",), upload_dir="/uploads", store=store, model=model,
                        inline_max_files=16, serve_app="photos-app")
    asked = settings.run_config(["/photos/2019 trip", "/photos/caf\udce9"], "holidays", "ingest-1", caption=True,
                                prune=command == "ingest")
    paths_from = write_paths(str(tmp_path), "ingest-1", asked.paths)
    program, flag, module, *argv = shlex.split(ingest_entrypoint(asked, command, paths_from))
    assert (program, flag, module) == (sys.executable, "-m", "ray_pipeline")
    parser = build_parser()
    args = parser.parse_args(argv)
    config = _config(args, parser)
    assert args.command == command
    # The very run the app was asked for, whole, as the CLI reads it back (a watch always prunes).
    assert config == dataclasses.replace(asked, prune=True)
    assert (config.target, config.model) == (settings.target("holidays"), settings.model)
    assert (config.paths, config.within, config.progress_id) == (("/photos/2019 trip", "/photos/caf\udce9"),
                                                                 ("/photos", "/uploads"), "ingest-1")
    assert config.uploads == "/uploads"  # its failed files are deleted, not remembered
    assert (config.caption, config.serve_app, config.prune, config.inline_max_files) == (True, "photos-app", True, 16)


def test_a_failed_jobs_message_is_its_reason_never_a_traceback():
    """Ray's status message of a failed job carries its last logs: the status gives the CLI's own `error:` line,
    or else the exception that ended the job, never "Traceback (most recent call last):"."""
    from serve_deployments.jobs import _reason

    logs = "Job failed.\nINFO route: ray_data (...)\nerror: the job stopped: Chroma server http://c:8000 is unreachable\n"
    assert _reason(logs) == "error: the job stopped: Chroma server http://c:8000 is unreachable"
    traceback = ("Job entrypoint command failed with exit code 1, last available logs:\nTraceback (most recent call last):\n"
                 '  File "/x.py", line 1, in <module>\n    main()\nOSError: [Errno 7] Argument list too long\n')
    assert _reason(traceback) == "error: OSError: [Errno 7] Argument list too long"
    assert _reason("Job was stopped.") == "Job was stopped." and _reason(None) is None
