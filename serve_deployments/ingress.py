"""Ingress: the HTTP API (FastAPI behind a bearer token) for ingestion jobs, search and captions."""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime.
import asyncio
import hashlib
import logging
import os
import re
import tempfile

import ray
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from ray import serve

from ray_pipeline.caption import CAPTION_INPUT
from ray_pipeline.decode import DEFAULT_MAX_PIXELS, DecodeError, InputGeometry
from ray_pipeline.discover import SUPPORTED_EXTENSIONS, extension_of, is_within
from ray_pipeline.errors import user_facing_reason
from ray_pipeline.model import ModelSpec
from ray_pipeline.journey import FileBytes, decode_file
from ray_pipeline.search import QueryEncoder, top_k
from ray_pipeline.store import (
    COLLECTION_NAME,
    OWNER_NAMESPACE,
    EmbeddedOwner,
    StoreError,
    StoreHandle,
    StoreTarget,
    connect,
    list_collections,
    owner_name,
)
from serve_deployments import page
from serve_deployments.auth import bearer_check
from serve_deployments.jobs import Jobs, UnknownJob
from serve_deployments.settings import Settings
from serve_deployments.thumbnails import (
    DEFAULT_SIZE,
    MAX_SIZE,
    MIN_SIZE,
    FileChanged,
    etag_matches,
    recorded_file,
    thumbnail_jpeg,
)

logger = logging.getLogger("ray.serve")
app = FastAPI(title="Photo embeddings", description="Ingest photo libraries into CLIP embeddings; search them.")


OPEN_ROUTES = {"/healthz", *page.ROUTES}
FORM_OVERHEAD = 1024**2  # multipart boundaries and fields around the files themselves
RECORD_ID = re.compile(r"[0-9a-f]{64}")  # a record's id: the SHA-256 of the file's bytes
# A thumbnail is addressed by its content's hash: it is never stale, only gone.
THUMBNAIL_CACHE = f"private, max-age={30 * 24 * 3600}, immutable"


@app.middleware("http")
async def guard(request: Request, call_next):
    """Before any body is read: the token (401), then the body's declared length (411, 413)."""
    state = request.app.state
    if request.url.path not in OPEN_ROUTES and not state.token_ok(request.headers.get("authorization", "")):
        return JSONResponse(status_code=401, content={"detail": "missing or wrong bearer token"},
                            headers={"WWW-Authenticate": "Bearer"})
    declared = request.headers.get("content-length", "")
    if request.method == "POST" and not declared.isdigit():
        return JSONResponse(status_code=411, content={"detail": "a Content-Length header is required"})
    if declared.isdigit() and int(declared) > state.max_body:
        return JSONResponse(status_code=413, content={"detail": f"request body larger than {state.max_body} bytes"})
    return await call_next(request)


class IngestRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="files or folders inside INGEST_ALLOWED_ROOTS")
    collection: str = Field(pattern=f"^{COLLECTION_NAME}$")
    caption: bool = False


class ImageSearchRequest(BaseModel):
    collection: str = Field(pattern=f"^{COLLECTION_NAME}$")
    k: int = Field(default=5, ge=1, le=1000)


class SearchRequest(ImageSearchRequest):
    text: str = Field(min_length=1)


def read_upload(upload: UploadFile, limit: int) -> FileBytes:
    """An uploaded file's bytes; its client-side name only lends a known extension, never a path."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload larger than {limit} bytes")
    ext = extension_of(upload.filename or "")
    return FileBytes(path=f"upload.{ext if ext in SUPPORTED_EXTENSIONS else 'bin'}", data=data, size=len(data), mtime=0.0)


# No CPU reserved: the ingress mostly waits on Ray and Chroma, and the ingestion jobs it starts need
# every CPU the cluster has free.
@serve.deployment(num_replicas=1, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(self, captioner, settings: Settings):
        self.settings = settings
        self.captioner = captioner
        app.state.token_ok = bearer_check(settings.token)
        app.state.max_body = settings.max_upload_bytes + FORM_OVERHEAD
        if settings.token is None:
            logger.warning("INGEST_ALLOW_NO_AUTH=1: the API is open to anyone who can reach it")
        self.jobs = Jobs(settings)
        self.owner = None
        if settings.chroma_url is None:  # embedded Chroma: one long-lived owner that jobs use too
            self.owner = (
                ray.remote(EmbeddedOwner)
                .options(name=owner_name(settings.chroma_path), namespace=OWNER_NAMESPACE, lifetime="detached",
                         get_if_exists=True, num_cpus=0)
                .remote()
            )
            ray.get(self.owner.open_folder.remote(settings.chroma_path))
        self.encoder = QueryEncoder(ModelSpec(settings.clip_model, settings.clip_pretrained, settings.clip_checkpoint,
                                              settings.allow_random_weights))
        os.makedirs(settings.upload_dir, exist_ok=True)

    def _store(self, collection: str) -> StoreHandle:
        target = StoreTarget(collection=collection, path=self.settings.chroma_path, url=self.settings.chroma_url)
        return StoreHandle(target, self.owner)

    def _checked_paths(self, paths: list[str]) -> list[str]:
        """Real paths inside the allowed roots (symlinks followed): 403 outside, 404 when missing."""
        checked = []
        for given in paths:
            try:
                real = os.path.realpath(given)
            except ValueError:  # a NUL byte
                raise HTTPException(422, "paths: not a valid path") from None
            if not is_within(real, self.settings.ingestion_roots()):
                raise HTTPException(403, f"path is outside the allowed roots: {given}")
            if not os.path.exists(real):
                raise HTTPException(404, f"no such file or folder: {given}")
            checked.append(real)
        return checked

    @app.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @app.post("/ingest", status_code=202)
    def ingest(self, body: IngestRequest) -> dict:
        return {"job_id": self.jobs.submit(self._checked_paths(body.paths), body.collection, body.caption)}

    @app.post("/ingest/upload", status_code=202)
    def ingest_upload(self, files: list[UploadFile] = File(...), collection: str = Form(..., pattern=f"^{COLLECTION_NAME}$"),
                      caption: bool = Form(False)) -> dict:
        stored = []
        budget = self.settings.max_upload_bytes
        for upload in files:
            file = read_upload(upload, budget)
            budget -= file.size
            digest = hashlib.sha256(file.data).hexdigest()
            path = os.path.join(self.settings.upload_dir, f"{digest}.{extension_of(file.path)}")
            if not os.path.exists(path):  # same bytes, same name: nothing to write twice
                with tempfile.NamedTemporaryFile(dir=self.settings.upload_dir, delete=False) as out:
                    out.write(file.data)
                os.replace(out.name, path)
            stored.append(path)
        return {"job_id": self.jobs.submit(stored, collection, caption), "files": len(stored)}

    @app.get("/ingest")
    def recent_jobs(self, limit: int = Query(20, ge=1, le=100)) -> dict:
        """This API's ingestion jobs, newest first (running and finished), as `GET /ingest/{job_id}`."""
        return {"jobs": self.jobs.recent(limit)}

    @app.get("/ingest/{job_id}")
    def job_status(self, job_id: str) -> dict:
        try:
            return self.jobs.status(job_id)
        except UnknownJob:
            raise HTTPException(404, f"no such ingestion job: {job_id}") from None

    @app.delete("/ingest/{job_id}")
    def stop_job(self, job_id: str) -> dict:
        try:
            return {"job_id": job_id, "stopped": self.jobs.stop(job_id)}
        except UnknownJob:
            raise HTTPException(404, f"no such ingestion job: {job_id}") from None

    @app.get("/collections")
    def collections(self) -> dict:
        if self.owner is not None:
            listed = ray.get(self.owner.list_collections.remote())
        else:
            listed = list_collections(connect(StoreTarget(collection="", url=self.settings.chroma_url)))
        return {"collections": listed}

    @app.get("/thumbnails/{collection}/{record_id}")
    def thumbnail(self, collection: str, record_id: str, request: Request,
                  size: int = Query(DEFAULT_SIZE, ge=MIN_SIZE, le=MAX_SIZE)) -> Response:
        """A JPEG of a recorded photo, read from the path its record holds (never one the client names)."""
        metadata = self._record(collection, record_id)
        etag = f'"{record_id}-{size}"'
        headers = {"ETag": etag, "Cache-Control": THUMBNAIL_CACHE}
        if etag_matches(request.headers.get("if-none-match", ""), etag):
            return Response(status_code=304, headers=headers)  # the client holds this very content
        try:
            file = recorded_file(metadata.get("path", ""), record_id, int(metadata.get("file_size", -1)))
        except FileChanged as exc:
            raise HTTPException(410, str(exc)) from None
        try:
            jpeg = thumbnail_jpeg(file, size)
        except DecodeError as exc:
            raise HTTPException(422, f"cannot make a thumbnail of {file.path}: {exc}") from None
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    def _record(self, collection: str, record_id: str) -> dict:
        """The metadata of one record of the collection; 404 when either is unknown."""
        if not RECORD_ID.fullmatch(record_id):
            raise HTTPException(404, f"no record {record_id!r} in collection {collection!r}: ids are SHA-256 hex digests")
        try:
            found = self._store(collection).records([record_id])
        except StoreError as exc:
            raise HTTPException(404, user_facing_reason(exc) or str(exc)) from None
        if record_id not in found:
            raise HTTPException(404, f"no record {record_id} in collection {collection!r}")
        return found[record_id]

    @app.post("/search")
    async def search(self, request: Request) -> dict:
        """JSON {collection, text, k}, or multipart with an image `file` (and `collection`, `k`)."""
        try:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await request.form()
                fields = ImageSearchRequest(collection=form.get("collection"), k=form.get("k", 5))
                if not hasattr(form.get("file"), "read"):
                    raise HTTPException(422, "file: an image file is required")
                query = read_upload(form.get("file"), self.settings.max_upload_bytes)
            else:
                fields = SearchRequest.model_validate_json(await request.body())
                query = fields.text
        except ValueError as exc:
            return JSONResponse(status_code=422, content={"detail": _validation_detail(exc)})
        # CLIP and Chroma work off the event loop, so status polls are answered meanwhile.
        return await asyncio.to_thread(self._search, fields.collection, query, fields.k)

    def _search(self, collection: str, query, k: int) -> dict:
        """`query`: a text, or an uploaded picture's FileBytes."""
        store = self._checked_store(collection)
        if isinstance(query, str):
            vector = self.encoder.text(query)
        else:
            vector = self.encoder.image(self._decode(query, InputGeometry.from_preprocess(self.encoder.resolved.preprocess)))
        return {"results": top_k(store, vector, k)}

    def _checked_store(self, collection: str) -> StoreHandle:
        store = self._store(collection)
        try:
            metadata = store.metadata
        except StoreError as exc:
            raise HTTPException(404, user_facing_reason(exc) or str(exc)) from None
        try:
            self.encoder.check(collection, metadata)
        except StoreError as exc:
            raise HTTPException(409, str(exc)) from None
        return store

    @staticmethod
    def _decode(file: FileBytes, geometry: InputGeometry):
        try:
            return decode_file(file, geometry, DEFAULT_MAX_PIXELS).pixels
        except DecodeError as exc:
            raise HTTPException(422, f"file: {exc}") from None

    @app.post("/caption")
    async def caption(self, file: UploadFile = File(...)) -> dict:
        upload = read_upload(file, self.settings.max_upload_bytes)
        picture = await asyncio.to_thread(self._decode, upload, CAPTION_INPUT)
        return {"caption": await self.captioner.caption.remote(picture)}

    @app.get("/ui", include_in_schema=False)
    def page_root(self) -> RedirectResponse:
        return RedirectResponse("ui/")  # relative, so it holds under any route prefix

    @app.get("/ui/", include_in_schema=False)
    def page_index(self) -> Response:
        return page.page_file("")

    @app.get("/ui/{name}", include_in_schema=False)
    def page_asset(self, name: str) -> Response:
        return page.page_file(name)


def _validation_detail(exc: ValueError) -> list | str:
    errors = getattr(exc, "errors", None)
    return [{"loc": e.get("loc"), "msg": e.get("msg")} for e in errors()] if callable(errors) else str(exc)
