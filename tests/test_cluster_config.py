"""The Serve config that `serve deploy` takes is valid for this Ray and points at this application."""

from __future__ import annotations

import yaml
from conftest import ROOT
from ray.serve.schema import ServeDeploySchema


def test_serve_config_validates():
    config = ServeDeploySchema.model_validate(yaml.safe_load((ROOT / "cluster/serve_config.yaml").read_text()))
    (application,) = config.applications
    assert application.import_path == "serve_deployments.app:app"
    env = application.runtime_env["env_vars"]
    assert "INGEST_API_TOKEN" not in env and env["INGEST_API_TOKEN_FILE"]
    assert {"INGEST_ALLOWED_ROOTS", "INGEST_UPLOAD_DIR", "CLIP_MODEL", "BLIP_MODEL", "CAPTION_IDLE_SECONDS"} <= set(env)
