"""Config: everything one ingestion needs to know, in one object passed down the pipeline."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ray_pipeline.decode import DEFAULT_MAX_PIXELS
from ray_pipeline.model import ModelSpec
from ray_pipeline.store import StoreTarget

DECODE_BATCH_SIZE = 16  # files per CPU-stage call: small, since RAW files are large in memory
DECODE_ACTOR_MEMORY = 2 * 1024**3  # declared to Ray per decode actor so a node is not over-packed
# At most this many files to read run without a Ray job: in the CLI's own process when no cluster runs,
# in the Serve app for the HTTP API (INGEST_INLINE_MAX_FILES).
INLINE_MAX_FILES = 64
# Writing to Chroma is I/O: write tasks take a sliver of a CPU, from the reserve the actors leave free
# (plan.LIGHT_TASK_RESERVE), so they stream records out while the actors hold the other CPUs.
LIGHT_TASK_CPUS = 0.1


def rows_per_block(files: int, cpus: float) -> int:
    """Paths per block of a job's input: small enough to spread over the CPU actors (8 blocks a CPU)."""
    return min(1024, max(DECODE_BATCH_SIZE, math.ceil(files / (max(1, int(cpus)) * 8))))


@dataclass(frozen=True)
class IngestConfig:
    target: StoreTarget
    model: ModelSpec = ModelSpec()
    paths: tuple[str, ...] = ()
    manifest: str | None = None
    batch_size: int | None = None  # embedding batch; None: 256 on CUDA, 32 on CPU
    actors: tuple[int, int] | None = None  # embedding actor pool bounds; None: one per GPU, or 1
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # auto (on for CUDA) | on | off
    max_pixels: int = DEFAULT_MAX_PIXELS
    caption: bool = False  # caption the stored photos through the Serve app's Captioner, after embedding
    serve_app: str = "default"  # the Serve application that runs the Captioner
    rehash: bool = False  # read and hash every file, even those whose record matches their path, size and mtime
    within: tuple[str, ...] = ()  # when set, only files whose real path lies inside these folders are read
    progress_id: str | None = None  # report live counts under this id (the HTTP API's job id)
    inline_max_files: int = INLINE_MAX_FILES  # with no cluster running, this many files to read are embedded in-process
    prune: bool = False  # remove the records of files gone from the folders of the run, or holding other bytes now
    prune_missing_folders: bool = False  # prune even under folders that are missing, unmounted or emptied
    dry_run: bool = False  # with prune: say what would be removed, change nothing

    @property
    def keeps_contents(self) -> bool:
        """Whether the job keeps (id, path) of every file it reads: for captions and prune."""
        return self.caption or self.prune
