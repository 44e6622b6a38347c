"""Embedders: what turns pictures into vectors (model-sized uint8 pixels -> L2-normalised CLIP vectors).

One word, `Embedder`, for all of them, its kinds named by where they run: a `LocalEmbedder` is the model in
this process (a search, the Serve app's `Embedder` replica, a run in the command's own process, or an actor
that runs one); `runs.warm` holds the kinds reached from elsewhere (`ActorEmbedder`: an actor of a run's own;
`ServedEmbedder`: the Serve app's Embedder); `runs.bulk_stages.EmbedStage` is the Ray Data job's.

On CUDA a LocalEmbedder runs in fp16 under `torch.compile`, warmed up on its one batch shape (short batches
are padded; a batch halved after running out of memory is a new shape, compiled once more), with pinned host
memory, non-blocking copies and normalisation on the device.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ray_pipeline.cluster.metrics import metrics
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.model import clip as clip_model
from ray_pipeline.model.clip import ModelSpec, ResolvedModel

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    """Turns pictures into vectors: (N, H, W, 3) uint8 at the model's input size -> (N, D) float32 unit vectors."""

    def embed(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ModelFacts:
    """What the callers of a model loaded elsewhere (the Serve app's Embedder, an actor of a run's own) need
    to know of it."""

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


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16, or AMX): there the towers run about twice as
    fast in bf16 as in fp32, their vectors agreeing to a cosine of 0.9999 (benchmarks/RESULTS.md, issue 29)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: fp32, the safe choice
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision_on(requested: str, device: str) -> str:
    """`--precision auto|fp32|bf16|fp16` on this device: auto is fp16 on a GPU, bf16 on a CPU that computes in it
    natively, fp32 elsewhere."""
    if requested == "auto":
        return "fp16" if device == "cuda" else "bf16" if native_bf16() else "fp32"
    if requested == "fp16" and device != "cuda":
        raise UserFacingError("--precision fp16 needs a GPU: on a CPU, fp32, or bf16 where the CPU computes in it")
    return requested


def compiles(compile: str, device: str) -> bool:
    """Whether `--compile auto|on|off` means torch.compile on this device (auto: on CUDA only)."""
    return compile == "on" or (compile == "auto" and device == "cuda")


class LocalEmbedder:
    """An OpenCLIP model loaded in this process: its image tower takes (N, H, W, 3) uint8 arrays; its text
    tower, loaded with `texts`, takes texts (a search, the Serve app's Embedder).

    It runs at most `batch` pictures at once. On CUDA that is the batch asked for, halved at start until
    it fits in the GPU's memory; a batch that runs out of memory later (another process took some) is
    halved and run again, so no picture is lost or embedded twice.
    """

    def __init__(
        self,
        model: clip_model.ResolvedModel | clip_model.ModelSpec,
        device: str = "cpu",
        compile: str = "off",
        batch_size: int = 0,
        network=None,
        texts: bool = False,
        threads: int | None = None,
        precision: str = "auto",
    ):
        """`model`: weights resolved already (with `network`, the model `resolve` loaded, to share), or a
        spec resolved and loaded here (as an actor of a run's own is started). `compile`: auto (on for CUDA),
        on or off. `threads`: torch's threads (Ray gives an actor one). `precision`: auto|fp32|bf16|fp16
        (`precision_on`). Asked for CUDA where torch sees no GPU (a node that advertises a GPU resource without
        one), it falls back to the CPU and says so."""
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        if isinstance(model, clip_model.ModelSpec):
            resolved, network = clip_model.resolve(model)
        else:
            resolved = model
        self.resolved = resolved
        if device == "cuda" and not torch.cuda.is_available():
            logger.warning("no CUDA device visible to this actor: embedding on the CPU instead")
            device = "cpu"
        self.device = torch.device(device)
        compiled = compiles(compile, self.device.type)
        self.precision = precision_on(precision, self.device.type)
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        network = network if network is not None else clip_model.load(resolved, device=device)
        self.visual = network.visual.to(self.device, self.dtype)
        # The text tower in bf16 where the image tower is, else in float32 (fp16 on a GPU is for images); tokenised
        # as OpenCLIP tokenises for this architecture.
        self._texts = None
        if texts:
            network.to(self.device, torch.bfloat16 if self.precision == "bf16" else torch.float32)
            self.visual.to(self.device, self.dtype)  # the same module, in place: back to the image tower's precision
            self._texts = (network, _tokenizer(resolved.architecture))
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(resolved.preprocess["mean"], device=self.device, dtype=self.dtype).view(shape)
        self.std = torch.tensor(resolved.preprocess["std"], device=self.device, dtype=self.dtype).view(shape)
        self.pad = compiled  # a compiled graph sees one batch shape only: short batches are padded
        # At most this many pictures at once; 0: any number (eager on the CPU, where memory is not the limit).
        self.batch = batch_size if compiled or self.device.type == "cuda" else 0
        if compiled:
            self.visual = torch.compile(self.visual)
        if self.batch:  # compiled now, once, and on CUDA the batch that fits is found
            self.embed(np.zeros((self.batch, *resolved.geometry.pixel_shape), np.uint8))
        if compiled:
            logger.info("image tower compiled (torch.compile) on %s for batches of %d", self.device, self.batch)

    def facts(self) -> ModelFacts:
        return ModelFacts(self.resolved.collection_metadata(), self.resolved.geometry)

    def described(self) -> dict:
        """What a run's summary says of the model that ran (`actors`): where, in what precision, on how many threads."""
        import torch

        return {"device": self.device.type, "precision": self.precision, "embed_threads": torch.get_num_threads()}

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """float32 unit vectors, one per picture, in order."""
        import torch

        if not len(pixels):
            return np.zeros((0, 0), np.float32)
        done, start = [], 0
        while start < len(pixels):
            chunk = pixels[start : start + self.batch] if self.batch else pixels[start:]
            try:
                done.append(self._embed_batch(chunk))
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

    def _embed_batch(self, pixels: np.ndarray) -> np.ndarray:
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

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """float32 unit vectors, one per text (an embedder loaded with `texts`)."""
        import torch

        if self._texts is None:
            raise ValueError("this embedder was loaded without its text tower")
        network, tokenizer = self._texts
        with torch.inference_mode():
            features = network.encode_text(tokenizer(texts).to(self.device)).float()
            return torch.nn.functional.normalize(features, dim=-1).cpu().numpy()


class LoadingEmbedder:
    """A `LocalEmbedder` built on a thread of its own (torch and OpenCLIP imported, the weights loaded: seconds on a
    laptop) while the run's first files are read and decoded; the first batch to embed waits for it. Its model is
    known beforehand (`clip.known`): the geometry to decode to, and what the collection records.

    The thread starts when `start` is called: after this process has imported what it needs besides (Chroma), as
    two threads importing at once can meet in a module the other has half imported."""

    def __init__(self, resolved: ResolvedModel, spec: ModelSpec, **options):
        self.resolved, self._spec, self._options = resolved, spec, options
        self._loading: Future[LocalEmbedder] | None = None

    def start(self) -> None:
        if self._loading is None:
            pool = ThreadPoolExecutor(1, thread_name_prefix="model")
            self._loading = pool.submit(LocalEmbedder, self.resolved, **self._options)
            pool.shutdown(wait=False)  # its one thread ends with the load

    def facts(self) -> ModelFacts:
        return ModelFacts(self.resolved.collection_metadata(), self.resolved.geometry)

    def loaded(self) -> LocalEmbedder:
        self.start()
        assert self._loading is not None
        try:
            return self._loading.result()
        except Exception:
            clip_model.forget(self._spec)  # resolved afresh by the next run, which then says why
            raise

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        return self.loaded().embed(pixels)

    def described(self) -> dict:
        return self.loaded().described()


def _tokenizer(architecture: str):
    import open_clip

    return open_clip.get_tokenizer(architecture)
