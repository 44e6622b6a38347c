"""Config: everything one run of ingestion was asked for, in one object, whoever asked: the CLI's options
(`cli`), or the Serve app's settings and a request, which the app's Ray jobs pass on as the CLI's options
again (`cli_args`). Every default comes from `core.defaults`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from ray_pipeline.core import defaults
from ray_pipeline.core.machine import this_machine
from ray_pipeline.core.paths import is_within
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.records.enrichments import CAPTION, FACES, TEXT, CostlyEnrichment, asked, enrichments_on
from ray_pipeline.records.target import StoreTarget


@dataclass(frozen=True)
class RunConfig:
    target: StoreTarget
    model: ModelSpec = ModelSpec()
    paths: tuple[str, ...] = ()
    manifest: str | None = None
    batch_size: int | None = None  # embedding batch; None: 256 on CUDA, 32 on CPU
    actors: tuple[int, int] | None = None  # embedding actor pool bounds; None: one per GPU, or 1
    device: str = "auto"  # auto | cpu | cuda
    compile: str = "auto"  # auto (on for CUDA) | on | off
    precision: str = "auto"  # auto (fp16 on a GPU, bf16 on a CPU that computes in it, else fp32) | fp32 | bf16 | fp16
    max_pixels: int = defaults.MAX_PIXELS
    caption: bool = False  # caption the stored photos through the Serve app's Captioner, after embedding
    read_text: bool = False  # read the text in the stored photos (OCR), after embedding, by a pool of its own
    find_faces: bool = False  # find the faces in the stored photos and group them into people, as read_text runs
    serve_app: str = defaults.SERVE_APP  # the Serve application that runs the Captioner (and the Embedder a watch uses)
    rehash: bool = False  # read and hash every file, even those whose record matches their path, size and mtime
    within: tuple[str, ...] = ()  # when set, only files whose real path lies inside these folders are read
    progress_id: str | None = None  # report live counts under this id (the HTTP API's job id)
    # Files to read that run without a Ray job at most: None, as expected costs say with no cluster running, and
    # defaults.INLINE_MAX_FILES on a cluster or in a watch's batch.
    inline_max_files: int | None = None
    prune: bool = False  # remove the records of files gone from the folders of the run, or holding other bytes now
    prune_missing_folders: bool = False  # prune even under folders that are missing, unmounted or emptied
    dry_run: bool = False  # with prune: say what would be removed, change nothing
    uploads: str | None = None  # the Serve app's upload folder: a file under it that fails is deleted, not remembered
    machine: str = field(default_factory=this_machine)  # whose files these are (`core.machine`): prune removes only theirs

    @property
    def enrichments(self) -> tuple[CostlyEnrichment, ...]:
        """The costly enrichments asked for, made after the records are written."""
        return asked(self.caption, self.read_text, self.find_faces)

    def with_defaults_of(self, collection_metadata: dict | None) -> RunConfig:
        """This run with the enrichments its collection has on by default (`collections create`) added."""
        on = enrichments_on(collection_metadata or {})
        return replace(self, caption=self.caption or CAPTION in on, read_text=self.read_text or TEXT in on,
                       find_faces=self.find_faces or FACES in on)

    @property
    def keeps_contents(self) -> bool:
        """Whether the run keeps (id, path) of every file it reads: for its enrichments, prune, and uploads' names."""
        return bool(self.enrichments) or self.prune or self.has_uploads

    @property
    def has_uploads(self) -> bool:
        """Whether the run reads the Serve app's uploads (whose records learn the names they came with)."""
        return self.uploads is not None and any(is_within(os.path.realpath(path), (self.uploads,)) for path in self.paths)

    def cli_args(self) -> list[str]:
        """The CLI's options that ask for this run (less its paths), for a command line another process runs:
        the Serve app's Ray jobs."""
        args = [*self.target.cli_args(), *self.model.cli_args()]
        if self.precision != "auto":
            args += ["--precision", self.precision]
        if self.max_pixels != defaults.MAX_PIXELS:
            args += ["--max-pixels", str(self.max_pixels)]
        for folder in self.within:
            args += ["--within", folder]
        if self.caption:
            args.append("--caption")
        if self.read_text:
            args.append("--read-text")
        if self.find_faces:
            args.append("--find-faces")
        if self.serve_app != defaults.SERVE_APP:
            args += ["--serve-app", self.serve_app]
        if self.progress_id:
            args += ["--progress-id", self.progress_id]
        if self.inline_max_files is not None:
            args += ["--inline-max-files", str(self.inline_max_files)]
        if self.prune:
            args.append("--prune")
        if self.uploads:
            args += ["--uploads", self.uploads]
        args += ["--machine", self.machine]
        return args
