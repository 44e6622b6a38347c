"""Warm: embedders whose model is loaded already, in another process, for runs that come again and again (a
watch's batches, the Serve app's small ingestions): the Serve app's `Embedder` deployment (`ServedEmbedder`),
or an actor of a run's own that holds a `LocalEmbedder` (`ActorEmbedder`)."""

from __future__ import annotations

import logging

import numpy as np

from ray_pipeline.core import defaults
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.model.clip import ModelSpec, recorded_identity
from ray_pipeline.model.embedders import LocalEmbedder, ModelFacts
from ray_pipeline.records.chroma import same_model

logger = logging.getLogger(__name__)

EMBEDDER = "Embedder"  # the Serve app's deployment
EMBED_ATTEMPTS = 2  # a lost Embedder replica costs one retry, on another (or a restarted) replica
EMBED_TIMEOUT_S = 300
MODEL_WAIT_S = 600  # the longest a model may take to load (a GPU still held elsewhere: the run says so)


class EmbedderLost(UserFacingError):
    """The Embedder was lost twice while embedding one chunk; what was written before stays whole."""


class ModelNotStarted(UserFacingError):
    """A model of the run's own did not start in time."""


def replica_lost() -> tuple[type[BaseException], ...]:
    """The errors that say a Serve replica died or cannot be reached, as Serve reports them to the caller."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    return RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError


class ServedEmbedder:
    """The Serve app's `Embedder` deployment, through a handle: a replica lost while embedding costs one retry."""

    def __init__(self, handle):
        self.handle = handle

    @classmethod
    def find(cls, serve_app: str = defaults.SERVE_APP, model: ModelSpec | None = None) -> ServedEmbedder | None:
        """The app's Embedder, when the app runs one (of this model, when one is given); else None."""
        from ray import serve

        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # its router's start, in this process: not the user's news
        try:
            handle = serve.get_deployment_handle(EMBEDDER, app_name=serve_app)
            facts = handle.model.remote().result(timeout_s=60)
        except Exception:  # no Serve, no such app, or no Embedder in it
            return None
        identity = recorded_identity(model) if model is not None else None
        if identity is not None and not same_model(facts.collection_metadata, identity):
            logger.info("the Serve app %r embeds with another model", serve_app)
            return None
        return cls(handle)

    def facts(self) -> ModelFacts:
        return self.handle.model.remote().result(timeout_s=MODEL_WAIT_S)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        lost = replica_lost()
        for attempt in range(1, EMBED_ATTEMPTS + 1):
            try:
                return self.handle.embed_images.remote(pixels).result(timeout_s=EMBED_TIMEOUT_S)
            except lost as exc:
                logger.warning("the Embedder was lost while embedding %d pictures (attempt %d of %d): %s",
                               len(pixels), attempt, EMBED_ATTEMPTS, type(exc).__name__)
        raise EmbedderLost("the Embedder was lost while embedding; the records written before are whole: "
                           "send the same files again to store the rest")

    def described(self) -> dict:
        """What a run's summary says of the model that ran (`actors`)."""
        return {"device": "the Serve app's Embedder"}

    def release(self) -> None:
        """The app's: nothing of it is the run's to give back."""


class ActorEmbedder:
    """A `LocalEmbedder` in an actor of the run's own, started on first use and kept until released (a
    burst's Ray Data job needs the GPU and CPUs it holds)."""

    def __init__(self, spec: ModelSpec, device: str, compile: str, batch_size: int, precision: str = "auto"):
        self._options = (spec, device, compile, batch_size, precision)
        self._actor = None
        self._facts: ModelFacts | None = None

    def _started(self):
        import ray

        if self._actor is None:
            spec, device, compile, batch_size, precision = self._options
            # A GPU only where one is free now: a GPU the Serve app holds part of would leave it waiting.
            gpu = device != "cpu" and ray.available_resources().get("GPU", 0) >= 1
            threads = max(1, int(ray.available_resources().get("CPU", 1)))
            logger.info("starting an embedding actor of the run's own (%s)", "GPU" if gpu else "CPU")
            self._actor = (ray.remote(LocalEmbedder).options(num_gpus=1 if gpu else 0, num_cpus=0)
                           .remote(spec, "cuda" if gpu else "cpu", compile, batch_size, threads=threads, precision=precision))
        return self._actor

    def facts(self) -> ModelFacts:
        import ray

        if self._facts is None:
            try:
                self._facts = ray.get(self._started().facts.remote(), timeout=MODEL_WAIT_S)
            except ray.exceptions.GetTimeoutError:
                raise ModelNotStarted(f"the run's model did not start in {MODEL_WAIT_S} s: is the GPU (or the CPU) it "
                                      "asked for held by something else?") from None
        return self._facts

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        import ray

        return ray.get(self._started().embed.remote(pixels))

    def release(self) -> None:
        """Give back what the actor holds (it starts again when needed)."""
        import ray

        if self._actor is not None:
            ray.kill(self._actor)
            self._actor = self._facts = None
