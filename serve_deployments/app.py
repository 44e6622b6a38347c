"""The Serve application: `serve run serve_deployments.app:app`, or `serve deploy cluster/serve_config.yaml`.

Settings are read from the environment when the application is built (the shell of `serve run`, or the
Serve config's runtime_env), so replicas on any node get the same configuration. Each deployment's
scaling and resources can also be set the Serve way, by a `deployments:` entry in the Serve config.
"""

from __future__ import annotations

from dataclasses import replace

from serve_deployments.captioner import MAX_BATCH as CAPTION_BATCH
from serve_deployments.captioner import Captioner
from serve_deployments.embedder import MAX_BATCH, Embedder, embedder_name
from serve_deployments.ingress import Ingress
from serve_deployments.inline_ingest import InlineIngest
from serve_deployments.scaling import to_zero_scaling, warm_scaling
from serve_deployments.settings import Settings
from ray_pipeline.records.enrichments import FACES, TEXT
from serve_deployments.picture_models import MAX_ONGOING as PICTURE_ONGOING
from serve_deployments.picture_models import FaceFinder, TextReader


def build_app(settings: Settings | None = None):
    settings = settings or Settings.from_env()
    # The default model's Embedder is always warm; another model's (`CLIP_EXTRA_MODELS`: collections created or
    # reindexed with it) starts with the first request for it, and goes after EMBED_EXTRA_IDLE_SECONDS idle.
    embedders = [Embedder.options(
        **warm_scaling(settings.embed_min_replicas, settings.embed_max_replicas, MAX_BATCH, settings.embed_num_gpus)
    ).bind(settings.model, settings.preview_max_pixels, settings.precision)]
    for number, spec in enumerate(settings.models[1:], start=1):
        embedders.append(Embedder.options(
            name=embedder_name(number),
            **to_zero_scaling(settings.embed_max_replicas, settings.embed_extra_idle_seconds, settings.embed_num_gpus,
                              MAX_BATCH)).bind(spec, settings.preview_max_pixels, settings.precision))
    # One replica at least, so an upload never waits for one to start; a second under many uploads. It
    # is given no token: it needs none.
    inline = InlineIngest.options(**warm_scaling(1, 2, 2)).bind(embedders, replace(settings, token=None))
    captioner = Captioner.options(
        **to_zero_scaling(settings.caption_max_replicas, settings.caption_idle_seconds, settings.caption_num_gpus,
                          CAPTION_BATCH)
    ).bind(settings.blip_model)
    text_reader = TextReader.options(
        **to_zero_scaling(settings.text_max_replicas, settings.text_idle_seconds, 0.0, PICTURE_ONGOING)).bind(TEXT.key)
    face_finder = FaceFinder.options(
        **to_zero_scaling(settings.face_max_replicas, settings.face_idle_seconds, 0.0, PICTURE_ONGOING)).bind(FACES.key)
    return Ingress.bind(embedders, inline, captioner, text_reader, face_finder, settings)


app = build_app()
