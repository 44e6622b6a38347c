"""Settings: the Serve application's configuration, read once from environment variables."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ray_pipeline.model import DEFAULT_MODEL, DEFAULT_PRETRAINED

logger = logging.getLogger(__name__)

DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
DEFAULT_MAX_UPLOAD_BYTES = 512 * 1024**2


class SettingsError(Exception):
    """The application cannot start with this configuration."""


class Secret(str):
    """A string that never shows its value in a repr, a log line or an error."""

    def __repr__(self) -> str:
        return "Secret('***')"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    token: Secret | None
    allowed_roots: tuple[str, ...]
    upload_dir: str
    chroma_path: str | None
    chroma_url: str | None
    clip_model: str = DEFAULT_MODEL
    clip_pretrained: str | None = DEFAULT_PRETRAINED
    clip_checkpoint: str | None = None
    allow_random_weights: bool = False
    blip_model: str = DEFAULT_BLIP
    caption_max_replicas: int = 1
    caption_idle_seconds: float = 300.0
    caption_num_gpus: float = 0.0
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    serve_app: str = "default"

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
            chroma_path=None if chroma_url else os.path.realpath(os.environ.get("CHROMA_PATH", "./chroma_data")),
            chroma_url=chroma_url,
            clip_model=os.environ.get("CLIP_MODEL", DEFAULT_MODEL),
            clip_pretrained=None if os.environ.get("CLIP_CHECKPOINT") else os.environ.get("CLIP_PRETRAINED", DEFAULT_PRETRAINED),
            clip_checkpoint=os.environ.get("CLIP_CHECKPOINT") or None,
            allow_random_weights=_flag("ALLOW_RANDOM_WEIGHTS"),
            blip_model=os.environ.get("BLIP_MODEL", DEFAULT_BLIP),
            caption_max_replicas=int(os.environ.get("CAPTION_MAX_REPLICAS", "1")),
            caption_idle_seconds=float(os.environ.get("CAPTION_IDLE_SECONDS", "300")),
            caption_num_gpus=float(os.environ.get("CAPTION_NUM_GPUS") or _default_gpu_share()),
            max_upload_bytes=int(os.environ.get("INGEST_MAX_UPLOAD_BYTES", str(DEFAULT_MAX_UPLOAD_BYTES))),
            serve_app=os.environ.get("SERVE_APP_NAME", "default"),
        )

    def ingestion_roots(self) -> tuple[str, ...]:
        """Where ingestion may read: the allowed roots, and the upload folder."""
        return (*self.allowed_roots, self.upload_dir)


def _default_gpu_share() -> float:
    import torch

    return 0.25 if torch.cuda.is_available() else 0.0


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
