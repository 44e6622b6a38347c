"""Model: which OpenCLIP weights a job uses, loading them, and the identity recorded with the vectors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import urlparse

from ray_pipeline.cluster.runtime import reachable
from ray_pipeline.core import cache, defaults
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.geometry import InputGeometry

logger = logging.getLogger(__name__)

RANDOM_SEED = 0  # every actor and every search must build the very same random model
RANDOM_WEIGHTS = f"random:seed={RANDOM_SEED}"  # the weights recorded for them
CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


class ModelError(UserFacingError):
    """The requested weights cannot be used; the job does not start."""


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for. `name` is an OpenCLIP architecture or a path to a model-config JSON."""

    name: str = defaults.MODEL
    pretrained: str | None = defaults.PRETRAINED
    checkpoint: str | None = None
    allow_random_weights: bool = False

    @classmethod
    def asked(cls, name: str | None = None, pretrained: str | None = None, checkpoint: str | None = None,
              allow_random_weights: bool = False) -> ModelSpec:
        """The model as the CLI's options or the app's environment ask for it (None: not said, so the
        default). A checkpoint excludes a tag: the weights come from that file alone; an empty tag asks for
        none (random weights, where allowed)."""
        if checkpoint:
            pretrained = None
        elif pretrained is None:
            pretrained = defaults.PRETRAINED
        return cls(name or defaults.MODEL, pretrained or None, checkpoint or None, allow_random_weights)

    @property
    def label(self) -> str:
        """The model as the app's settings (`CLIP_EXTRA_MODELS`) and its API name it: `ARCHITECTURE@WEIGHTS`, the
        weights a pretrained tag or a checkpoint file (nothing after the `@`: random weights, where allowed)."""
        return f"{self.name}@{self.checkpoint or self.pretrained or ''}"

    @classmethod
    def from_label(cls, label: str, allow_random_weights: bool = False) -> ModelSpec:
        """The model a `label` names; weights that look like a file (a folder in them, or a checkpoint's
        extension) are a checkpoint, others a pretrained tag."""
        name, at, weights = label.strip().rpartition("@")
        if not at or not name.strip():
            raise ModelError(f"{label!r}: expected ARCHITECTURE@WEIGHTS (a pretrained tag, or a checkpoint file)")
        weights = weights.strip()
        is_file = "/" in weights or weights.lower().endswith(CHECKPOINT_EXTENSIONS)
        return cls(name.strip(), None if is_file else (weights or None), weights if is_file else None, allow_random_weights)

    @property
    def architecture(self) -> str:
        """The architecture a collection written by this model records (`model`), known without loading it."""
        return _architecture_name(self.name)

    def cli_args(self) -> list[str]:
        """The CLI's options that ask for this model (read back by `asked`), for a command line another
        process runs: the Serve app's ingestion jobs use its model so."""
        weights = ["--checkpoint", self.checkpoint] if self.checkpoint else ["--pretrained", self.pretrained or ""]
        return ["--model", self.name, *weights, *(["--allow-random-weights"] if self.allow_random_weights else [])]


@dataclass(frozen=True)
class ResolvedModel:
    """Weights that are known to load: what each actor loads, and what the collection records."""

    architecture: str  # the OpenCLIP model name
    config_file: str | None  # the model-config JSON for architectures OpenCLIP does not ship
    pretrained: str | None  # tag or local checkpoint path handed to open_clip.create_model
    local_weights: str | None  # the file the driver loaded: used directly where it exists
    weights: str  # recorded identity: the tag, "checkpoint:sha256:<hex>", or "random:seed=0"
    random_weights: bool
    embedding_dim: int
    preprocess: dict  # OpenCLIP's preprocess config: size, mean, std, interpolation, resize_mode

    @property
    def geometry(self):
        """The model's input (`decode.InputGeometry`): what every picture is decoded and cropped to."""
        return InputGeometry.from_preprocess(self.preprocess)

    def collection_metadata(self) -> dict[str, Any]:
        """Metadata stored on a collection so that later writes and searches use the same model."""
        meta: dict[str, Any] = {
            "model": self.architecture,
            "weights": self.weights,
            "random_weights": self.random_weights,
            "embedding_dim": self.embedding_dim,
        }
        if self.config_file:
            meta["model_config_file"] = self.config_file
        if self.pretrained and os.path.isfile(self.pretrained):
            meta["checkpoint_path"] = self.pretrained
        return meta


def _is_config_file(name: str) -> bool:
    return name.lower().endswith(".json")


def _architecture_name(name: str) -> str:
    """The name OpenCLIP knows the architecture by: a config file's is its file name without .json."""
    return os.path.splitext(os.path.basename(name))[0] if _is_config_file(name) else name


def _register_architecture(name: str) -> tuple[str, str | None]:
    import open_clip

    if _is_config_file(name):
        path = os.path.abspath(os.path.expanduser(name))
        if not os.path.isfile(path):
            raise ModelError(f"no such model config file: {name}")
        open_clip.add_model_config(path)
        return _architecture_name(path), path
    if open_clip.get_model_config(name) is None and not name.startswith(("hf-hub:", "local-dir:")):
        raise ModelError(f"unknown OpenCLIP architecture {name!r} (see open_clip.list_models())")
    return name, None


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes: a checkpoint's identity. A checkpoint of hundreds of MB takes a second to
    hash, which a re-run with nothing new would pay every time: the digest is kept in the user's cache, under
    the file's path, size, mtime and inode (`cache.file_key`), and read back while all four are the same."""
    key = cache.file_key(path)
    digest = cache.kept("checksums", key)
    if digest is None:
        hashing = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                hashing.update(chunk)
        digest = hashing.hexdigest()
        cache.keep("checksums", key, digest)
    return digest


def _download(pretrained_cfg: dict) -> str:
    """The local file of a pretrained tag's weights: cached, else downloaded.

    When the hub cannot be reached, only the cache is tried, so an offline machine gets its answer at
    once instead of after a minute of retries.
    """
    import huggingface_hub.constants as hub
    import open_clip

    source = hub.ENDPOINT if pretrained_cfg.get("hf_hub") else pretrained_cfg.get("url", "")
    offline = hub.HF_HUB_OFFLINE
    url = urlparse(source)
    hub.HF_HUB_OFFLINE = offline or not reachable(url.hostname, url.port or 443, timeout=3.0)
    try:
        path = open_clip.download_pretrained(pretrained_cfg)
    finally:
        hub.HF_HUB_OFFLINE = offline
    if not path:
        raise ModelError("no download source for these weights")
    return path


def _build(architecture: str, pretrained: str | None, device: str = "cpu"):
    import open_clip
    import torch

    if pretrained is None:
        torch.manual_seed(RANDOM_SEED)
    with _quiet_about_random_weights():  # the job says so itself, once, and records it
        model = open_clip.create_model(architecture, pretrained=pretrained, device=device)
    return model.eval()


@contextmanager
def _quiet_about_random_weights() -> Iterator[None]:
    """Without OpenCLIP's own warning for a model built with random weights (on the root logger)."""

    def other(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(other)
    try:
        yield
    finally:
        root.removeFilter(other)


def _requested_weights(spec: ModelSpec, architecture: str) -> tuple[str | None, str, dict]:
    """(what create_model gets, the recorded identity, the tag's OpenCLIP config or {})."""
    import open_clip

    if spec.checkpoint:
        checkpoint = os.path.abspath(os.path.expanduser(spec.checkpoint))
        if not os.path.isfile(checkpoint):
            raise ModelError(f"no such checkpoint file: {spec.checkpoint}")
        return checkpoint, _checkpoint_identity(checkpoint), {}
    if spec.pretrained:
        tag_cfg = open_clip.get_pretrained_cfg(architecture, spec.pretrained)
        if tag_cfg:
            return spec.pretrained, spec.pretrained, tag_cfg
        tags = open_clip.list_pretrained_tags_by_model(architecture)
        problem = f"unknown pretrained tag {spec.pretrained!r} for {architecture}; known tags: {tags}"
        if not spec.allow_random_weights:
            raise ModelError(problem)
        logger.warning("%s", problem)
    elif not spec.allow_random_weights:
        raise ModelError("no weights given: pass --pretrained TAG, --checkpoint FILE or --allow-random-weights")
    return None, RANDOM_WEIGHTS, {}


def _checkpoint_identity(path: str) -> str:
    return f"checkpoint:sha256:{file_sha256(path)}"


def recorded_identity(spec: ModelSpec) -> dict[str, str] | None:
    """The model and weights `resolve` would record for this spec, worked out without loading a model
    (so a re-run with nothing new to embed never imports torch); None where only loading can tell."""
    if spec.checkpoint:
        checkpoint = os.path.abspath(os.path.expanduser(spec.checkpoint))
        if not os.path.isfile(checkpoint):
            return None
        weights = _checkpoint_identity(checkpoint)
    elif spec.pretrained:
        weights = spec.pretrained  # where it cannot be had, random weights may stand in: the job tells
    else:
        return None
    return {"model": _architecture_name(spec.name), "weights": weights}


def resolve(spec: ModelSpec):
    """Check that the weights load, once, on the driver; returns (ResolvedModel, the loaded model).

    Failing here gives the user one clear line before any work starts, instead of a crash inside
    every actor.
    """
    import open_clip
    from open_clip.transform import merge_preprocess_dict

    architecture, config_file = _register_architecture(spec.name)
    pretrained, weights, tag_cfg = _requested_weights(spec, architecture)
    try:
        local_weights = _download(tag_cfg) if tag_cfg else pretrained
        model = _build(architecture, local_weights)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if spec.checkpoint:
            raise ModelError(f"checkpoint {spec.checkpoint} does not load into {architecture}: {reason}") from exc
        if not spec.allow_random_weights:
            raise ModelError(
                f"cannot load pretrained weights {spec.pretrained!r} for {architecture} ({reason}); "
                "pass --checkpoint FILE with a local copy, or --allow-random-weights to try the "
                "pipeline with meaningless vectors"
            ) from exc
        logger.warning("cannot load pretrained weights %r: %s", spec.pretrained, reason)
        pretrained = local_weights = None
        weights, tag_cfg = RANDOM_WEIGHTS, {}
        model = _build(architecture, None)
    preprocess = merge_preprocess_dict(open_clip.get_model_preprocess_cfg(model), tag_cfg)
    resolved = ResolvedModel(
        architecture=architecture,
        config_file=config_file,
        pretrained=pretrained,
        local_weights=local_weights,
        weights=weights,
        random_weights=pretrained is None,
        embedding_dim=_probe_dim(model, preprocess),
        preprocess=preprocess,
    )
    key = _spec_key(spec)
    if key is not None:
        cache.keep("models", key, json.dumps(asdict(resolved)))
    return resolved, model


def known(spec: ModelSpec) -> ResolvedModel | None:
    """The model as `resolve` found it before, read back from the user's cache while the spec's files are as they
    were: what decoding needs (the input geometry) and what collections record, known in a millisecond instead
    of the seconds torch and OpenCLIP take to import and build it. None where it is not known."""
    key = _spec_key(spec)
    text = cache.kept("models", key) if key is not None else None
    if text is None:
        return None
    try:
        return ResolvedModel(**json.loads(text))
    except (TypeError, ValueError):
        return None


def forget(spec: ModelSpec) -> None:
    """The spec no longer resolves as it was kept (its weights went away): resolved afresh next time."""
    key = _spec_key(spec)
    if key is not None:
        cache.forget("models", key)


def _spec_key(spec: ModelSpec) -> str | None:
    """The spec and the state of the files it names, with OpenCLIP's version; None where a file is missing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        files = [cache.file_key(path) for path in (spec.checkpoint, spec.name) if path and os.path.isfile(path)]
        return json.dumps([spec.name, spec.pretrained, spec.checkpoint, spec.allow_random_weights, files,
                           version("open_clip_torch")])
    except (OSError, PackageNotFoundError):
        return None


def warn_if_random(resolved: ResolvedModel, collection: str) -> None:
    """Said once per job, as soon as the weights are known: the CLI repeats it last, in its own words."""
    if resolved.random_weights:
        logger.warning("RANDOM WEIGHTS: the vectors of %r will be meaningless for search", collection)


def _probe_dim(model, preprocess: dict) -> int:
    import torch


    height, width, _ = InputGeometry.from_preprocess(preprocess).pixel_shape
    with torch.no_grad():
        return int(model.encode_image(torch.zeros(1, 3, height, width)).shape[-1])


def load(resolved: ResolvedModel, device: str = "cpu"):
    """Build the model an actor or a search uses: the same weights that `resolve` checked."""
    if resolved.config_file:
        import open_clip

        open_clip.add_model_config(resolved.config_file)
    here = resolved.local_weights if resolved.local_weights and os.path.isfile(resolved.local_weights) else None
    return _build(resolved.architecture, here or resolved.pretrained, device)


def spec_from_collection(metadata: dict, override: ModelSpec | None = None) -> ModelSpec:
    """The spec that rebuilds a collection's model, from what the collection recorded."""
    if override is not None:
        return override
    name = metadata.get("model_config_file") or metadata.get("model") or defaults.MODEL
    weights = str(metadata.get("weights", ""))
    if metadata.get("random_weights"):
        return ModelSpec(name=name, pretrained=None, allow_random_weights=True)
    if weights.startswith("checkpoint:"):
        return ModelSpec(name=name, pretrained=None, checkpoint=metadata.get("checkpoint_path"))
    return replace(ModelSpec(name=name), pretrained=weights or defaults.PRETRAINED)
