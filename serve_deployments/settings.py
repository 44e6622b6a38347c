"""Settings: the Serve application's configuration, read once from environment variables."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace

from ray_pipeline.core import defaults
from ray_pipeline.core.machine import this_machine
from ray_pipeline.model.clip import ModelError, ModelSpec
from ray_pipeline.model.embedders import PRECISIONS
from ray_pipeline.records.errors import StoreError
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.search.similar import IN_PROCESS_MAX

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024**2
SIMILAR_MAX_PAIRS = 10_000  # an answer of `similar` in the app: about a MB of JSON at most


class SettingsError(Exception):
    """The application cannot start with this configuration."""


class Secret(str):
    """A string that never shows its value in a repr, a log line or an error."""

    def __repr__(self) -> str:
        return "Secret('***')"


def _number(name: str, kind: type, default, minimum: float = 0):
    """The environment variable `name` as an int or float of at least `minimum`; `default` when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        raise SettingsError(f"{name}={value!r}: expected {'a whole number' if kind is int else 'a number'} of at "
                            f"least {minimum}")
    return number


def _choice(name: str, choices: tuple[str, ...]) -> str:
    """The environment variable `name`, one of `choices` (the first when unset)."""
    value = os.environ.get(name, "").strip() or choices[0]
    if value not in choices:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(choices)}")
    return value


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    token: Secret | None
    allowed_roots: tuple[str, ...]
    upload_dir: str
    store: StoreTarget  # where the collections live; its collection is empty: each request names its own
    model: ModelSpec = ModelSpec()  # the CLIP model the app searches and writes with: a new collection's
    extra_models: tuple[ModelSpec, ...] = ()  # other models a collection may be created or reindexed with
    blip_model: str = defaults.BLIP_MODEL
    caption_max_replicas: int = 1
    caption_idle_seconds: float = 300.0
    caption_num_gpus: float = 0.0
    text_max_replicas: int = 1
    text_idle_seconds: float = 300.0
    machine: str = field(default_factory=this_machine)  # whose files the app's ingestions read (`core.machine`)
    face_max_replicas: int = 1
    face_idle_seconds: float = 300.0
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    serve_app: str = defaults.SERVE_APP
    embed_min_replicas: int = 1
    embed_max_replicas: int = 2
    embed_num_gpus: float = 0.0
    embed_extra_idle_seconds: float = 300.0  # another model's Embedder goes to zero replicas after this long idle
    inline_max_files: int = defaults.INLINE_MAX_FILES
    similar_in_app_max: int = IN_PROCESS_MAX  # records compared in the app; a larger collection's `similar` is a Ray job
    similar_max_pairs: int = SIMILAR_MAX_PAIRS  # the strongest pairs an answer of `similar` keeps
    preview_max_pixels: int = defaults.PREVIEW_MAX_PIXELS  # the most pixels a thumbnail or a search by photo decodes
    precision: str = "auto"  # the Embedder's arithmetic (EMBED_PRECISION), as the CLI's --precision

    @classmethod
    def from_env(cls) -> "Settings":
        token = _read_token()
        if token is None and not _flag("INGEST_ALLOW_NO_AUTH"):
            raise SettingsError(
                "no API token: set INGEST_API_TOKEN or INGEST_API_TOKEN_FILE "
                "(or INGEST_ALLOW_NO_AUTH=1 to run without authentication, never on a network)"
            )
        roots = tuple(os.path.realpath(r) for r in os.environ.get("INGEST_ALLOWED_ROOTS", "").split(":") if r.strip())
        upload_dir = os.path.realpath(os.environ.get("INGEST_UPLOAD_DIR", "./uploads"))
        chroma_url = os.environ.get("CHROMA_URL") or None
        return cls(
            token=token,
            allowed_roots=roots,
            upload_dir=upload_dir,
            store=StoreTarget(collection="", url=chroma_url,
                              path=None if chroma_url else os.path.realpath(os.environ.get("CHROMA_PATH", defaults.CHROMA_PATH))),
            model=ModelSpec.asked(os.environ.get("CLIP_MODEL"), os.environ.get("CLIP_PRETRAINED"),
                                  os.environ.get("CLIP_CHECKPOINT"), _flag("ALLOW_RANDOM_WEIGHTS")),
            extra_models=_models("CLIP_EXTRA_MODELS", _flag("ALLOW_RANDOM_WEIGHTS")),
            blip_model=os.environ.get("BLIP_MODEL", defaults.BLIP_MODEL),
            caption_max_replicas=_number("CAPTION_MAX_REPLICAS", int, 1),
            caption_idle_seconds=_number("CAPTION_IDLE_SECONDS", float, 300.0),
            caption_num_gpus=_gpu_share("CAPTION_NUM_GPUS", 0.25),
            text_max_replicas=_number("TEXT_MAX_REPLICAS", int, 1),
            text_idle_seconds=_number("TEXT_IDLE_SECONDS", float, 300.0),
            machine=this_machine(),  # as the shell building the app names it, for every replica and job alike
            face_max_replicas=_number("FACE_MAX_REPLICAS", int, 1),
            face_idle_seconds=_number("FACE_IDLE_SECONDS", float, 300.0),
            max_upload_bytes=_number("INGEST_MAX_UPLOAD_BYTES", int, DEFAULT_MAX_UPLOAD_BYTES),
            serve_app=os.environ.get("SERVE_APP_NAME", defaults.SERVE_APP),
            embed_min_replicas=_number("EMBED_MIN_REPLICAS", int, 1),
            embed_max_replicas=_number("EMBED_MAX_REPLICAS", int, 2, minimum=1),
            embed_num_gpus=_gpu_share("EMBED_NUM_GPUS", 0.5),
            embed_extra_idle_seconds=_number("EMBED_EXTRA_IDLE_SECONDS", float, 300.0),
            inline_max_files=_number("INGEST_INLINE_MAX_FILES", int, defaults.INLINE_MAX_FILES),
            similar_in_app_max=_number("SIMILAR_IN_APP_MAX", int, IN_PROCESS_MAX),
            similar_max_pairs=_number("SIMILAR_MAX_PAIRS", int, SIMILAR_MAX_PAIRS, minimum=1),
            preview_max_pixels=_number("PREVIEW_MAX_PIXELS", int, defaults.PREVIEW_MAX_PIXELS, minimum=1),
            precision=_choice("EMBED_PRECISION", PRECISIONS),
        )

    def __post_init__(self) -> None:
        try:
            self.store.urls  # a malformed list of servers stops the app here, not at its first request
        except StoreError as exc:
            raise SettingsError(f"CHROMA_URL: {exc}") from None
        if self.embed_min_replicas > self.embed_max_replicas:
            raise SettingsError(f"EMBED_MIN_REPLICAS ({self.embed_min_replicas}) is over EMBED_MAX_REPLICAS "
                                f"({self.embed_max_replicas})")

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """Every model the app runs, its default first: each has an Embedder deployment of its own."""
        return (self.model, *[spec for spec in self.extra_models if spec != self.model])

    def target(self, collection: str) -> StoreTarget:
        """One collection of the app's store."""
        return replace(self.store, collection=collection)

    def ingestion_roots(self) -> tuple[str, ...]:
        """Where ingestion may read: the allowed roots, and the upload folder."""
        return (*self.allowed_roots, self.upload_dir)

    def run_config(self, paths: list[str], collection: str, job_id: str, caption: bool = False,
                   prune: bool = False, read_text: bool = False, find_faces: bool = False,
                   model: ModelSpec | None = None) -> RunConfig:
        """A run the app was asked for, as the CLI would be asked for it: the app's store, the collection's model
        (`model`; a new collection's is the app's default), files read only inside the ingestion roots (symlinks
        followed), live counts under the job's id."""
        return RunConfig(target=self.target(collection), model=model or self.model, paths=tuple(paths), caption=caption,
                         read_text=read_text, find_faces=find_faces, machine=self.machine, serve_app=self.serve_app, within=self.ingestion_roots(), progress_id=job_id,
                         inline_max_files=self.inline_max_files, prune=prune, uploads=self.upload_dir)


def _models(name: str, allow_random_weights: bool) -> tuple[ModelSpec, ...]:
    """The environment variable `name`: models as `ARCHITECTURE@WEIGHTS`, comma-separated."""
    try:
        return tuple(ModelSpec.from_label(label, allow_random_weights)
                     for label in os.environ.get(name, "").split(",") if label.strip())
    except ModelError as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _gpu_share(name: str, share: float) -> float:
    """The environment variable `name`; unset, `share` of a GPU where the building process sees one."""
    given = _number(name, float, None)
    if given is not None:
        return given
    import torch

    return share if torch.cuda.is_available() else 0.0


def _read_token() -> Secret | None:
    token = os.environ.get("INGEST_API_TOKEN")
    token_file = os.environ.get("INGEST_API_TOKEN_FILE")
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise SettingsError(f"cannot read INGEST_API_TOKEN_FILE: {exc.strerror}") from None
    return Secret(token) if token else None
