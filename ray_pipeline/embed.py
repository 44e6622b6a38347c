"""Embed (the model stage): model-sized uint8 pixels -> L2-normalised CLIP image vectors.

A Ray Data class UDF: each actor loads the model once. On CUDA it runs in fp16 under
`torch.compile`, warmed up on its one batch shape (short batches are padded; a batch halved after
running out of memory is a new shape, compiled once more), with pinned host memory, non-blocking
copies and normalisation on the device.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ray_pipeline import model as clip_model
from ray_pipeline.decode import InputGeometry
from ray_pipeline.errors import UserFacingError
from ray_pipeline.metrics import metrics
from ray_pipeline.outcome import Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedderModel:
    """What the callers of a warm model (the Serve app's Embedder, a watch's embedding actor) need to
    know of it."""

    collection_metadata: dict  # what a collection it writes or searches records (checked by `check_model`)
    geometry: InputGeometry  # the size of the pictures it takes


def local_device(requested: str) -> str:
    """`--device auto|cpu|cuda` for a model in this process: auto is CUDA where torch sees a GPU."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UserFacingError("--device cuda, but torch sees no GPU on this machine")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def compiles(compile: str, device: str) -> bool:
    """Whether `--compile auto|on|off` means torch.compile on this device (auto: on CUDA only)."""
    return compile == "on" or (compile == "auto" and device == "cuda")


class ImageEncoder:
    """A loaded OpenCLIP image tower that takes (N, H, W, 3) uint8 arrays.

    It runs at most `batch` pictures at once. On CUDA that is the batch asked for, halved at start until
    it fits in the GPU's memory; a batch that runs out of memory later (another process took some) is
    halved and run again, so no picture is lost or embedded twice.
    """

    def __init__(
        self,
        resolved: clip_model.ResolvedModel,
        device: str = "cpu",
        compile: str = "off",
        batch_size: int = 0,
        network=None,
    ):
        """`compile`: auto (on for CUDA), on or off. `network`: an already loaded model of `resolved` to
        share (a search holds one); else loaded here. Asked for CUDA where torch sees no GPU (a node that
        advertises a GPU resource without one), it falls back to the CPU and says so."""
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            logger.warning("no CUDA device visible to this actor: embedding on the CPU instead")
            device = "cpu"
        self.device = torch.device(device)
        compiled = compiles(compile, self.device.type)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        network = network if network is not None else clip_model.load(resolved, device=device)
        self.visual = network.visual.to(self.device, self.dtype)
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(resolved.preprocess["mean"], device=self.device, dtype=self.dtype).view(shape)
        self.std = torch.tensor(resolved.preprocess["std"], device=self.device, dtype=self.dtype).view(shape)
        self.pad = compiled  # a compiled graph sees one batch shape only: short batches are padded
        # At most this many pictures at once; 0: any number (eager on the CPU, where memory is not the limit).
        self.batch = batch_size if compiled or self.device.type == "cuda" else 0
        if compiled:
            self.visual = torch.compile(self.visual)
        if self.batch:  # compiled now, once, and on CUDA the batch that fits is found
            self.encode(np.zeros((self.batch, *resolved.geometry.pixel_shape), np.uint8))
        if compiled:
            logger.info("image tower compiled (torch.compile) on %s for batches of %d", self.device, self.batch)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """float32 unit vectors, one per picture, in order."""
        import torch

        if not len(pixels):
            return np.zeros((0, 0), np.float32)
        done, start = [], 0
        while start < len(pixels):
            chunk = pixels[start : start + self.batch] if self.batch else pixels[start:]
            try:
                done.append(self._encode_batch(chunk))
            except torch.cuda.OutOfMemoryError:  # a padded chunk ran as a whole batch
                self._halve(self.batch if self.pad and self.batch else len(chunk))  # and this chunk again
                continue
            start += len(chunk)
        return np.concatenate(done)

    def _halve(self, tried: int) -> None:
        """A batch of `tried` pictures did not fit: from now on at most half of it, said in the log and
        on the `photo_embed_batch_halvings` counter. One picture that does not fit is an error."""
        import torch

        if tried <= 1:
            raise UserFacingError(f"the model does not fit in the memory of {self.device} with even one picture")
        self.batch = tried // 2
        torch.cuda.empty_cache()
        logger.warning("out of memory on %s with %d pictures at once: embedding %d at once from now on",
                       self.device, tried, self.batch)
        metrics().batch_halvings.inc(1, tags={"device": self.device.type})

    def _encode_batch(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        count = len(pixels)
        if self.pad and count < self.batch:  # keep one shape: no recompiles
            pad = np.zeros((self.batch - count, *pixels.shape[1:]), np.uint8)
            pixels = np.concatenate([pixels, pad])
        host = torch.from_numpy(np.require(pixels, np.uint8, ["C", "W"]))
        if self.device.type == "cuda":
            host = host.pin_memory()
        with torch.inference_mode():
            batch = host.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            features = self.visual((batch - self.mean) / self.std).float()
            features = torch.nn.functional.normalize(features, dim=-1)
        return features[:count].cpu().numpy()


class WarmImageEncoder:
    """Ray actor: one image tower kept loaded for a long-lived process (a `watch`) that embeds a few
    pictures now and then."""

    def __init__(self, spec: clip_model.ModelSpec, device: str, compile: str, batch_size: int, threads: int):
        import torch

        torch.set_num_threads(threads)  # Ray gives an actor one thread; a small batch uses what is free
        resolved, network = clip_model.resolve(spec)
        self.encoder = ImageEncoder(resolved, device, compile, batch_size, network=network)
        self.facts = EmbedderModel(resolved.collection_metadata(), resolved.geometry)

    def model(self) -> EmbedderModel:
        return self.facts

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return self.encoder.encode(pixels)


class ClipEncoder:
    """Both towers of one OpenCLIP model, loaded once: texts and pictures to unit vectors, for searches
    and for the Serve app's `Embedder`."""

    def __init__(self, spec: clip_model.ModelSpec, device: str = "cpu", compile: str = "off", batch_size: int = 0):
        import open_clip

        self.resolved, network = clip_model.resolve(spec)
        self.images = ImageEncoder(self.resolved, device, compile, batch_size, network=network)
        self._network = network.to(self.images.device)  # the text tower stays in float32
        self._tokenizer = open_clip.get_tokenizer(self.resolved.architecture)

    def texts(self, texts: list[str]) -> np.ndarray:
        """float32 unit vectors, one per text."""
        import torch

        with torch.inference_mode():
            tokens = self._tokenizer(texts).to(self.images.device)
            return self._network.encode_text(tokens, normalize=True).float().cpu().numpy()

    def check(self, collection: str, metadata: dict) -> None:
        """StoreError when the collection's vectors come from another model."""
        from ray_pipeline.store import check_model

        check_model(collection, metadata, self.resolved.collection_metadata())


@dataclass(frozen=True)
class EmbedOptions:
    """What an embedding actor is made with."""

    resolved: clip_model.ResolvedModel
    device: str  # cpu | cuda
    compile: str  # auto | on | off
    batch_size: int
    collection: str  # the metrics' tag
    threads: int = 1  # torch threads, on the CPU


class EmbedImages:
    """Ray Data class UDF: embeds the batch's "new" rows, passes the others through."""

    def __init__(self, options: EmbedOptions):
        import torch

        torch.set_num_threads(options.threads)  # Ray sets one thread per whole CPU the actor holds, at least one
        resolved, device, compile, batch_size = options.resolved, options.device, options.compile, options.batch_size
        self.tags = {"collection": options.collection}
        self.shape = resolved.geometry.pixel_shape
        self._encoder: Future = Future()
        if compiles(compile, device):  # compiled and warmed up here, on the
            self._encoder.set_result(ImageEncoder(resolved, device, compile, batch_size))  # actor's main thread
        else:  # loaded while the first files are read; batches with nothing new never wait for it
            self._encoder = ThreadPoolExecutor(1).submit(ImageEncoder, resolved, device, compile, batch_size)
        logger.info("embedding actor started: %s on %s (compile: %s)", resolved.architecture, device, compile)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        new = np.flatnonzero(batch["status"] == Outcome.NEW)
        embeddings = np.array([b""] * len(batch["status"]), dtype=object)
        embed_seconds = np.zeros(len(batch["status"]))
        if len(new):
            pixels = np.stack([np.frombuffer(batch["pixels"][i], np.uint8).reshape(self.shape) for i in new])
            encoder = self._encoder.result()  # a model that failed to load raises here
            started = time.perf_counter()
            vectors = encoder.encode(pixels)
            elapsed = time.perf_counter() - started
            metrics().embed_seconds.observe(elapsed, tags=self.tags)
            embed_seconds[new] = elapsed / len(new)  # the batch's time, shared by its pictures
            for i, vector in zip(new, vectors):
                embeddings[i] = vector.astype(np.float32).tobytes()
        batch["embedding"] = embeddings
        batch["embed_seconds"] = embed_seconds
        del batch["pixels"]  # not needed downstream: keep it out of the object store
        return batch
