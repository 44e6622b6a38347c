"""The Serve application: `serve run serve_deployments.app:app`, or `serve deploy cluster/serve_config.yaml`.

Settings are read from the environment when the application is built (the shell of `serve run`, or the
Serve config's runtime_env), so replicas on any node get the same configuration.
"""

from __future__ import annotations

from serve_deployments.captioner import Captioner, captioner_options
from serve_deployments.ingress import Ingress
from serve_deployments.settings import Settings


def build_app(settings: Settings | None = None):
    settings = settings or Settings.from_env()
    options = captioner_options(settings.caption_max_replicas, settings.caption_idle_seconds, settings.caption_num_gpus)
    captioner = Captioner.options(**options).bind(settings.blip_model)
    return Ingress.bind(captioner, settings)


app = build_app()
