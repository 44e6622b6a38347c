"""The Serve application: `serve run serve_deployments.app:app`, or `serve deploy cluster/serve_config.yaml`.

Settings are read from the environment when the application is built (the shell of `serve run`, or the
Serve config's runtime_env), so replicas on any node get the same configuration.
"""

from __future__ import annotations

import ray

from serve_deployments.captioner import Captioner, captioner_options
from serve_deployments.ingress import Ingress
from serve_deployments.settings import Settings


def build_app(settings: Settings | None = None):
    settings = settings or Settings.from_env()
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    options = captioner_options(settings.caption_max_replicas, settings.caption_idle_seconds, 0.25 if gpus else 0)
    captioner = Captioner.options(**options).bind(settings.blip_model)
    return Ingress.bind(captioner, settings)


app = build_app()
