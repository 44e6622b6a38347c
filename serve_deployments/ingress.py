"""Ingress: the HTTP API (FastAPI behind a bearer token) for ingestion jobs, search, captions and people."""

# No `from __future__ import annotations` here: FastAPI reads the route annotations at runtime.
import asyncio
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypeVar

import ray
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ray import serve

from ray_pipeline.core import defaults
from ray_pipeline.core.errors import user_facing_reason
from ray_pipeline.core.formats import SUPPORTED_EXTENSIONS, extension_of
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.paths import is_within, path_text, recorded_path
from ray_pipeline.files.decode import DecodeError, decode_file
from ray_pipeline.files.listing import listed_up_to
from ray_pipeline.files.reading import FileBytes
from ray_pipeline.files.upload_names import write_upload_name
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.records.access_keys import MAX_KEY_NAME, AccessError
from ray_pipeline.records.chroma import same_model
from ray_pipeline.records.collections import CollectionRefused, check_new_collection, collections_at, creation_metadata
from ray_pipeline.records.enrichments import CAPTION, FACES, TEXT, asked
from ray_pipeline.records.errors import MissingCollection, StoreError
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.people import MAX_NAME, PeopleError
from ray_pipeline.records.store import RecordStore
from ray_pipeline.records.target import collection_name_problem
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.regroup import regroup
from ray_pipeline.runs.route import Route, RouteKind, RunFacts, choose_route
from ray_pipeline.runs.warm import EmbedderLost, replica_lost
from ray_pipeline.search.people import LIKE_MAX, face_json, people_like, person_json
from ray_pipeline.search.query import newest_first, text_top_k, top_k
from ray_pipeline.search.similar import DEFAULT_THRESHOLD, find_similar
from serve_deployments import page
from serve_deployments.access import (
    AppKeys,
    audit,
    audit_log,
    collection_in_path,
    create_key,
    current_key,
    delete,
    list_keys,
    revoke_key,
    scope_needed,
    show,
    use_key,
)
from serve_deployments.jobs import JOB_ID, Jobs, UnknownJob, new_job_id
from serve_deployments.models import AppModels, ModelNotRun
from serve_deployments.settings import Settings
from serve_deployments.store_access import long_lived_owner, store_handle
from serve_deployments.thumbnails import (
    DEFAULT_SIZE,
    MAX_SIZE,
    MIN_SIZE,
    FileChanged,
    etag_matches,
    face_jpeg,
    recorded_file,
    thumbnail_jpeg,
)

logger = logging.getLogger("ray.serve")
app = FastAPI(title="Photo embeddings", description="Ingest photo libraries into CLIP embeddings; search them.")


OPEN_ROUTES = {"/healthz", *page.ROUTES}
FORM_OVERHEAD = 1024**2  # multipart boundaries and fields around the files themselves
RECORD_ID = re.compile(r"[0-9a-f]{64}")  # a record's id: the SHA-256 of the file's bytes
SIMILAR_MIN_THRESHOLD = 0.5  # below it nearly every pair of photos is "similar": an answer of no use, and huge
PREVIEW_DECODES = 2  # pictures decoded at once by a replica for previews: N requests cost at most this many decodes
# A thumbnail is addressed by its content's hash: it is never stale, only gone.
THUMBNAIL_CACHE = f"private, max-age={30 * 24 * 3600}, immutable"


@app.middleware("http")
async def guard(request: Request, call_next):
    """Before any body is read: the key (401), its scope and the collection in the path (403), then the body's
    declared length (411, 413)."""
    state = request.app.state
    path = request.url.path
    if path not in OPEN_ROUTES:
        try:
            key = await asyncio.to_thread(state.keys.key_of, request.headers.get("authorization", ""))
        except StoreError:
            return JSONResponse(status_code=503, content={"detail": "the store of the app's keys does not answer: try again"})
        if key is None:
            return JSONResponse(status_code=401, content={"detail": "missing, wrong or revoked bearer token"},
                                headers={"WWW-Authenticate": "Bearer"})
        needed = scope_needed(request.method, path)
        if not key.allows(needed):
            return JSONResponse(status_code=403, content={"detail": f"this key's scope is {key.scope}: this needs the "
                                                                    f"{needed} scope"})
        collection = collection_in_path(path)
        if collection is not None and not key.may_use(collection):
            return JSONResponse(status_code=403, content={"detail": f"this key may not use collection {collection!r}"})
        use_key(key)
    declared = request.headers.get("content-length", "")
    if request.method == "POST" and not declared.isdigit():
        return JSONResponse(status_code=411, content={"detail": "a Content-Length header is required"})
    if declared.isdigit() and int(declared) > state.max_body:
        return JSONResponse(status_code=413, content={"detail": f"request body larger than {state.max_body} bytes"})
    return await call_next(request)


@app.exception_handler(RequestValidationError)
async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, each error with its place, message and type, but not the `input` FastAPI would echo
    (an upload's internals, or a secret pasted into the wrong field)."""
    detail = [{"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


@app.exception_handler(PeopleError)
@app.exception_handler(AccessError)
@app.exception_handler(CollectionRefused)
async def refused(request: Request, exc: Exception) -> JSONResponse:
    """A person, a face, a name or a key that cannot be used: 422, naming the field ("person: no person ...")."""
    return JSONResponse(status_code=422, content={"detail": str(exc)})


def _job_id(job_id: str) -> str:
    """A job id of this API's form, or UnknownJob (a 404) before anything is asked of Ray."""
    if not JOB_ID.fullmatch(job_id):
        raise UnknownJob(job_id)
    return job_id


@contextmanager
def _store_answers(collection: str) -> Iterator[None]:
    """The store's refusals as the caller needs them: a collection that is not there (or a name Chroma would
    not take) is a 404 saying so, never the store's place or its other collections; a store that does not
    answer is a 503."""
    if collection_name_problem(collection):
        raise HTTPException(404, "no such collection: not a collection name")
    try:
        yield
    except MissingCollection:
        raise HTTPException(404, f"no collection {collection!r}") from None
    except StoreError as exc:
        logger.warning("collection %r: %s", collection, user_facing_reason(exc) or exc)
        raise HTTPException(503, "the store of the collections does not answer (the app's log says why): try again "
                                 "later") from None


# ?wait=true: an ingestion run in the app answers once it has stored its records (200, the job's status).
WAIT = Query(False, description="for an ingestion run in the app (at most INGEST_INLINE_MAX_FILES files): answer "
                                "once its records are stored, with the job's status (200), instead of at once (202)")


MAX_PATHS = 1000  # distinct paths in one ingestion request (a folder holds any number of photos)
MAX_QUERY_CHARS = 1000  # a query text's length: CLIP reads 77 tokens of it; far longer is no query, only work


def _collection_name(name: str) -> str:
    """A collection name exactly as Chroma checks it, before anything starts (a 422 naming the field)."""
    problem = collection_name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


CollectionName = Annotated[str, AfterValidator(_collection_name)]


class PathsRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description=f"files or folders inside INGEST_ALLOWED_ROOTS (at most {MAX_PATHS} "
                                                       "distinct ones; a path named twice is taken once)")
    collection: CollectionName
    caption: bool = False
    read_text: bool = Field(False, description="read the text in the photos (OCR) after they are stored, by the app's "
                                               "TextReader or the job's own pool")
    find_faces: bool = Field(False, description="find the faces in the photos after they are stored, grouped into people, "
                                                "by the app's FaceFinder or the job's own pool")

    @field_validator("paths")
    @classmethod
    def _distinct(cls, paths: list[str]) -> list[str]:
        distinct = list(dict.fromkeys(paths))
        if len(distinct) > MAX_PATHS:
            raise ValueError(f"at most {MAX_PATHS} distinct paths in one request (name their folders instead), got "
                             f"{len(distinct)}")
        return distinct


class IngestRequest(PathsRequest):
    prune: bool = Field(False, description="remove the records of files gone from these folders, or holding other "
                                           "bytes now, as `ingest --prune` (always a Ray job)")


class WatchRequest(PathsRequest):
    """Folders to follow until stopped."""


MAX_RESULTS = 1000  # the most of k, and of offset: a search asks Chroma for offset + k and cuts the page from them


class ResultsRequest(SearchFilters):
    """A page of results, and the filters beside it (a field that is not one of them is a 422)."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(default=5, ge=1, le=MAX_RESULTS)
    offset: int = Field(default=0, ge=0, le=MAX_RESULTS)
    collapse: bool = Field(default=True, description="a RAW+JPEG pair as one result (the picture, its RAW in `raw`)")

    @property
    def filters(self) -> SearchFilters:
        """The filters alone (validated already, as fields of this request). The folder is resolved as the
        app resolves the paths it ingests (symlinks followed), so it matches the paths its records hold."""
        values = {name: getattr(self, name) for name in SearchFilters.model_fields}
        if self.folder is not None:
            values["folder"] = path_text(os.path.realpath(self.folder))
        return SearchFilters.model_construct(**values)


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    confirm: str = Field(max_length=600, description="the collection's name, typed again")


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: CollectionName
    model: str | None = Field(None, max_length=1000, description="one of `GET /models`' names; none: the app's default")
    caption: bool = Field(False, description="every ingestion into it captions its photos")
    read_text: bool = Field(False, description="every ingestion into it reads the text in its photos")
    find_faces: bool = Field(False, description="every ingestion into it finds the faces in its photos")


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=1000, description="one of `GET /models`' names")
    allow_left_out: bool = Field(False, description="swap even when some records cannot be read again (they stay in "
                                                    "the old records only); by default the reindex stops, nothing changed")


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=MAX_KEY_NAME)
    scope: Literal["search", "ingest", "admin"]
    collections: list[CollectionName] | None = Field(None, min_length=1, description="the collections it may use; "
                                                     "none given: every one")


class NameRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=MAX_NAME)


class MergeRequest(BaseModel):
    """The faces of `other` become `into`'s; `other` goes."""

    model_config = ConfigDict(extra="forbid")
    into: str = Field(min_length=1, max_length=200)
    other: str = Field(min_length=1, max_length=200)


class MoveRequest(BaseModel):
    """The person a face goes to; null: nobody."""

    model_config = ConfigDict(extra="forbid")
    person: str | None = Field(max_length=200)


class FromFields(BaseModel):
    """A model read from form fields or query parameters, as a page sends them: a blank one is left out (an
    input left empty); one sent once is its value, even where FastAPI reads a list (`format=jpg,png` is then
    split as in JSON); one sent again and again is its list (`format=jpg&format=heic`)."""

    @model_validator(mode="before")
    @classmethod
    def _as_sent(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        once = {key: value[0] if isinstance(value, list) and len(value) == 1 else value for key, value in values.items()}
        return {key: value for key, value in once.items() if value != ""}


class ListingRequest(FromFields, ResultsRequest):
    """A page of a listing: it reads the matching records whatever the offset, so any offset is fine."""

    offset: int = Field(default=0, ge=0)


class ImageSearchRequest(ResultsRequest):
    collection: CollectionName


class SearchRequest(ImageSearchRequest):
    text: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    mode: Literal["vector", "words", "both"] = Field(
        "both", description="rank by CLIP's vector, by the words found in the photos (their text, captions, places "
                            "and file names), or both fused")


class ImageSearchForm(FromFields, ImageSearchRequest):
    """A search by photo, as multipart: the photo is a field of the model too, else it would be an unknown one."""

    file: UploadFile = Field(description="the photo to search by")


Body = TypeVar("Body", bound=BaseModel)


def in_body(model: type[Body], body: bytes | dict) -> Body:
    """`model` from a body read by the route itself (`POST /search` takes two kinds); when it does not
    validate, FastAPI's own 422, each error placed in the body as FastAPI places those of the bodies it reads.
    (Defined before the deployment class: Serve pickles the class, and its methods' globals, when it is
    declared.)"""
    try:
        return model.model_validate_json(body) if isinstance(body, bytes) else model.model_validate(body)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def read_upload(upload: UploadFile, limit: int) -> FileBytes:
    """An uploaded file's bytes; its client-side name only lends a known extension, never a path."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload larger than {limit} bytes")
    ext = extension_of(upload.filename or "")
    return FileBytes(path=f"upload.{ext if ext in SUPPORTED_EXTENSIONS else 'bin'}", data=data, size=len(data), mtime=0.0)


# No CPU reserved: the ingress mostly waits on Ray and Chroma, and the ingestion jobs it starts need
# every CPU the cluster has free. It holds no model: searches and small ingestions go to the Embedder.
@serve.deployment(num_replicas=1, max_ongoing_requests=100, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(self, embedders: list, inline, captioner, text_reader, face_finder, settings: Settings):
        self.settings = settings
        self.models = AppModels(settings.models, embedders)
        self.captioner = captioner
        self.text_reader = text_reader
        self.face_finder = face_finder
        app.state.max_body = settings.max_upload_bytes + FORM_OVERHEAD
        if settings.token is None:
            logger.warning("INGEST_ALLOW_NO_AUTH=1: the API is open to anyone who can reach it")
        self.jobs = Jobs(settings, inline)
        self.owner = long_lived_owner(settings)  # embedded Chroma: the one owner that jobs use too
        self.keys = app.state.keys = AppKeys(settings.token, settings.store, self.owner)
        self.previews = threading.BoundedSemaphore(PREVIEW_DECODES)  # thumbnails and /caption decode this many at once
        os.makedirs(settings.upload_dir, exist_ok=True)

    def _store(self, collection: str) -> RecordStore:
        self._may_use(collection)
        return store_handle(self.settings, collection, self.owner).store

    @staticmethod
    def _may_use(collection: str) -> None:
        """403 where the request's key is limited to other collections."""
        if not current_key().may_use(collection):
            raise HTTPException(403, f"this key may not use collection {collection!r}")

    async def _audit(self, action: str, collection: str | None = None, detail: str = "") -> None:
        """A destructive act, written to the audit log with the request's key's id (never its secret)."""
        await asyncio.to_thread(self.keys.run, audit, current_key(), action, collection, detail)

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

    async def _ingest(self, config: RunConfig, route: Route, wait: bool, **extra) -> Response:
        """Start the ingestion on its route, in the app (`warm`) or as a Ray job: 202 with its id; with `wait`,
        one in the app answers 200 with its status once its records are stored (a Ray job, minutes or hours
        long, is followed by polling its status)."""
        if route.kind != RouteKind.WARM:
            job_id = await asyncio.to_thread(self.jobs.submit, config, route)
            return JSONResponse(status_code=202, content={"job_id": job_id, **extra})
        job_id, stored = await self.jobs.start_inline(config, route)
        if not wait:
            return JSONResponse(status_code=202, content={"job_id": job_id, **extra})
        failure = await asyncio.shield(stored)  # a client that goes away leaves the job running
        if isinstance(failure, (EmbedderLost, StoreError)):  # the model or the store went away: what was written stays
            raise HTTPException(503, f"{user_facing_reason(failure)} (job {job_id})")
        return JSONResponse({**await asyncio.to_thread(self.jobs.status, job_id), **extra})

    def _route(self, files: int, prune: bool = False, watch: bool = False) -> Route:
        """Where an ingestion of this many files (counted up to one past the limit) runs."""
        return choose_route(RunFacts(to_read=files, in_app=True, prune=prune, watch=watch,
                                     inline_max_files=self.settings.inline_max_files))

    @app.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    async def _writing(self, collection: str) -> tuple[ModelSpec, dict | None]:
        """The model an ingestion into the collection runs (a new one's: the app's default; 409 where the app does not
        run it, or while the collection is being reindexed), and the collection's metadata (None: a new one)."""
        reindexing = await asyncio.to_thread(self.jobs.reindexing, collection)
        if reindexing is not None:
            raise HTTPException(409, f"collection: {collection!r} is being reindexed (job {reindexing}): ingest into it "
                                     "once that job has ended")
        try:
            _, metadata = await self._existing_store(collection)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return self.settings.model, None  # a new collection
        return self.settings.models[await self._model_number(collection, metadata)], metadata

    async def _run_config(self, paths: list[str], collection: str, caption: bool, read_text: bool, find_faces: bool,
                          prune: bool = False, writing: tuple[ModelSpec, dict | None] | None = None) -> RunConfig:
        """The run asked for, by the model that wrote the collection, with the enrichments it has on by default."""
        model, metadata = writing or await self._writing(collection)
        return self.settings.run_config(paths, collection, new_job_id(), caption, prune, read_text, find_faces,
                                        model=model).with_defaults_of(metadata)

    async def _model_number(self, collection: str, metadata: dict) -> int:
        try:
            return await self.models.number_of(collection, metadata)
        except ModelNotRun as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/ingest", status_code=202)
    async def ingest(self, body: IngestRequest, wait: bool = WAIT) -> Response:
        self._may_use(body.collection)
        paths = await asyncio.to_thread(self._checked_paths, body.paths)
        files = await asyncio.to_thread(listed_up_to, paths, self.settings.inline_max_files)
        config = await self._run_config(paths, body.collection, body.caption, body.read_text, body.find_faces, body.prune)
        if body.prune:
            await self._audit("prune", body.collection, "\n".join(paths))
        return await self._ingest(config, self._route(files, prune=body.prune), wait)

    @app.post("/watches", status_code=202)
    async def watch(self, body: WatchRequest) -> Response:
        """A Ray job that ingests the folders, then follows them until stopped (`DELETE /ingest/{job_id}`):
        new and changed photos in, through the app's Embedder; deleted ones out."""
        self._may_use(body.collection)
        paths = await asyncio.to_thread(self._checked_paths, body.paths)
        for given, real in zip(body.paths, paths):
            if not os.path.isdir(real):
                raise HTTPException(422, f"paths: not a folder: {given} (a watch follows folders)")
        config = await self._run_config(paths, body.collection, body.caption, body.read_text, body.find_faces)
        job_id = await asyncio.to_thread(self.jobs.submit, config, self._route(0, watch=True), True)
        await self._audit("watch (removes the records of photos deleted from the folders)", body.collection,
                          f"{job_id}\n" + "\n".join(paths))
        return JSONResponse(status_code=202, content={"job_id": job_id})

    @app.post("/ingest/upload", status_code=202)
    async def ingest_upload(self, files: Annotated[list[UploadFile], File()],
                            collection: Annotated[CollectionName, Form()], caption: bool = Form(False),
                            read_text: bool = Form(False), find_faces: bool = Form(False), wait: bool = WAIT) -> Response:
        self._may_use(collection)
        writing = await self._writing(collection)  # before anything is saved: a refusal leaves no file behind
        stored = await asyncio.to_thread(self._save_uploads, files)
        config = await self._run_config(stored, collection, caption, read_text, find_faces, writing=writing)
        return await self._ingest(config, self._route(len(stored)), wait, files=len(stored))

    def _save_uploads(self, files: list[UploadFile]) -> list[str]:
        """Each upload written once into the upload folder, named by its content's hash."""
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
            write_upload_name(self.settings.upload_dir, path, upload.filename)
            stored.append(path)
        return stored

    @app.get("/ingest")
    def recent_jobs(self, limit: int = Query(20, ge=1, le=100)) -> dict:
        """This API's ingestion jobs, newest first (running and finished), as `GET /ingest/{job_id}`: of the
        collections the key may use."""
        key = current_key()
        return {"jobs": [job for job in self.jobs.recent(limit) if key.may_use(job.get("collection") or "")]}

    def _job(self, job_id: str) -> dict:
        """A job's status; 404 for one this API does not know, or of a collection the key may not use."""
        try:
            status = self.jobs.status(_job_id(job_id))
        except UnknownJob:
            raise HTTPException(404, f"no such ingestion job: {job_id}") from None
        if not current_key().may_use(status.get("collection") or ""):
            raise HTTPException(404, f"no such ingestion job: {job_id}")
        return status

    @app.get("/ingest/{job_id}")
    def job_status(self, job_id: str) -> dict:
        return self._job(job_id)

    @app.get("/ingest/{job_id}/logs")
    async def job_logs(self, job_id: str, offset: int = Query(0, ge=0)) -> dict:
        """The job's log lines from `offset` on (`{"lines", "offset"}`: ask again from that offset for those that
        come next; `status`, to stop asking once it is final)."""
        status = await asyncio.to_thread(self._job, job_id)
        return {**await asyncio.to_thread(self.jobs.logs, job_id, offset), "status": status["status"]}

    @app.delete("/ingest/{job_id}")
    def stop_job(self, job_id: str) -> dict:
        self._job(job_id)
        try:
            return {"job_id": job_id, "stopped": self.jobs.stop(_job_id(job_id))}
        except UnknownJob:
            raise HTTPException(404, f"no such ingestion job: {job_id}") from None

    @app.get("/collections")
    def collections(self) -> dict:
        if self.owner is not None:
            listed = ray.get(self.owner.list_collections.remote())
        else:
            listed = collections_at(self.settings.store)
        key = current_key()
        return {"collections": [entry for entry in listed if key.may_use(entry["name"])]}

    @app.get("/collections/{collection}")
    async def collection(self, collection: str, failures: int = Query(0, ge=0, le=1000)) -> dict:
        """What a collection holds: records, photos, its model, its enrichments, people, faces and remembered
        failures (the first `failures` of them listed)."""
        self._may_use(collection)
        with _store_answers(collection):
            return await asyncio.to_thread(self.keys.run, show, collection, failures)

    @app.delete("/collections/{collection}")
    async def delete_collection(self, collection: str, body: DeleteRequest) -> dict:
        """The collection and its companions (failures, faces, people), gone: only with its name typed again in
        `confirm`; what was removed, and an entry in the audit log."""
        self._may_use(collection)
        with _store_answers(collection):
            removed = await asyncio.to_thread(self.keys.run, delete, collection, body.confirm)
        if self.owner is not None:
            await self.owner.forget.remote(collection)
        await self._audit("collection deleted", collection,
                          ", ".join(f"{name} ({count} records)" for name, count in removed.collections))
        return removed.as_json()

    @app.get("/models")
    def models_listed(self) -> dict:
        """The CLIP models the app runs (`CLIP_MODEL`, then `CLIP_EXTRA_MODELS`): what a collection may be created or
        reindexed with."""
        return {"models": self.models.listed()}

    def _model_asked(self, label: str | None) -> int:
        """The number of the app's model of this label (none: the default); 422 naming the field where it runs none."""
        number = 0 if label is None else self.models.number_labelled(label)
        if number is None:
            raise HTTPException(422, f"model: this app runs no model {label!r} (it runs "
                                     f"{', '.join(spec.label for spec in self.settings.models)})")
        return number

    @app.post("/collections", status_code=201)
    async def create_collection(self, body: CreateRequest) -> dict:
        """An empty collection of one of the app's models, whose ingestions make the enrichments asked for whether
        asked again or not: what it holds, as `GET /collections/{name}`."""
        self._may_use(body.name)
        number = self._model_asked(body.model)
        await asyncio.to_thread(self.keys.run, check_new_collection, body.name)
        metadata = creation_metadata((await self.models.facts(number)).collection_metadata,
                                     asked(body.caption, body.read_text, body.find_faces))
        with _store_answers(body.name):
            await asyncio.to_thread(lambda: store_handle(self.settings, body.name, self.owner).open(metadata))
            return await asyncio.to_thread(self.keys.run, show, body.name, 0)

    @app.post("/collections/{collection}/reindex", status_code=202)
    async def reindex_collection(self, collection: str, body: ReindexRequest) -> Response:
        """A Ray job that embeds every record's file again with another of the app's models into a new collection,
        keeping paths, metadata and enrichments, then swaps the names (the old records stay, renamed, until deleted):
        202 with its id, followed as an ingestion is."""
        number = self._model_asked(body.model)
        _, metadata = await self._existing_store(collection)
        if self.settings.store.sharded:
            raise HTTPException(422, "collection: a collection sharded over several servers cannot be reindexed yet")
        running = await asyncio.to_thread(self.jobs.running_on, collection)
        if running:
            raise HTTPException(409, f"collection: jobs are writing to {collection!r} ({', '.join(running)}): reindex it "
                                     "once they have ended (a watch: stop it first)")
        facts = await self.models.facts(number)
        if same_model(metadata, facts.collection_metadata):
            raise HTTPException(422, f"model: collection {collection!r} holds vectors of that very model already")
        job_id = await asyncio.to_thread(self.jobs.submit_reindex, collection, self.settings.models[number],
                                         body.allow_left_out)
        await self._audit("reindex", collection, f"{job_id} into {body.model}")
        return JSONResponse(status_code=202, content={"job_id": job_id})

    @app.get("/whoami")
    def whoami(self) -> dict:
        """The key in use (never its secret): what the page may offer."""
        return current_key().as_json()

    @app.post("/keys", status_code=201)
    async def create_key(self, body: KeyRequest) -> dict:
        """A new key: its secret is in this answer only (kept as its SHA-256)."""
        key, secret = await asyncio.to_thread(self.keys.run, create_key, body.name, body.scope, body.collections)
        await self._audit("key created", None, f"{key.id} {key.scope} {key.name!r}")
        return {**key.as_json(), "secret": secret}

    @app.get("/keys")
    async def keys_listed(self) -> dict:
        return {"keys": [key.as_json() for key in await asyncio.to_thread(self.keys.run, list_keys)]}

    @app.delete("/keys/{key_id}")
    async def revoke_key(self, key_id: str) -> dict:
        """Revoked at once, in every replica: its next request is a 401."""
        key = await asyncio.to_thread(self.keys.run, revoke_key, key_id)
        await self._audit("key revoked", None, f"{key.id} {key.name!r}")
        return key.as_json()

    @app.get("/audit")
    async def audit_entries(self, limit: int = Query(100, ge=1, le=1000)) -> dict:
        """The newest destructive acts: when, the key's id and name, what, on which collection."""
        return {"entries": await asyncio.to_thread(self.keys.run, audit_log, limit)}

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
            file = recorded_file(recorded_path(metadata) or "", record_id, int(metadata.get("file_size", -1)))
        except FileChanged as exc:
            raise HTTPException(410, str(exc)) from None
        try:
            with self.previews:
                jpeg = thumbnail_jpeg(file, size, self.settings.preview_max_pixels)
        except DecodeError as exc:
            raise HTTPException(422, f"cannot make a thumbnail of {path_text(file.path)}: {exc}") from None
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    def _record(self, collection: str, record_id: str) -> dict:
        """The metadata of one record of the collection; 404 when either is unknown."""
        if not RECORD_ID.fullmatch(record_id):
            raise HTTPException(404, "no such record: ids are SHA-256 hex digests")
        with _store_answers(collection):
            found = self._store(collection).records([record_id])
        if record_id not in found:
            raise HTTPException(404, f"no record {record_id} in collection {collection!r}")
        return found[record_id]

    @app.post("/search")
    async def search(self, request: Request) -> dict:
        """Both searches at one address, as clients have always sent them: multipart is a search by photo (as
        `POST /search/image`), any other body a search by text in JSON (as `POST /search/text`)."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            return await self.search_image(in_body(ImageSearchForm, {key: form.getlist(key) for key in form}))
        return await self.search_text(in_body(SearchRequest, await request.body()))

    @app.post("/search/text")
    async def search_text(self, body: SearchRequest) -> dict:
        """JSON {collection, text, k, offset, filters...}: the best matches first."""
        return await self._search(body, lambda embedder: embedder.embed_texts.remote(body.text), body)

    @app.post("/search/image")
    async def search_image(self, form: Annotated[ImageSearchForm, File()]) -> dict:
        """Multipart: an image `file`, and `collection`, `k`, `offset` and filters as form fields: the best
        matches first."""
        photo = read_upload(form.file, self.settings.max_upload_bytes)
        return await self._search(form, lambda embedder: embedder.embed_photo.remote(photo))

    async def _search(self, fields: ImageSearchRequest, embed: Callable, by_text: SearchRequest | None = None) -> dict:
        """The page of results for the query `embed(an Embedder)` embeds (`by_text`: a text's, whose words are looked
        for too), by the model that wrote the collection."""
        default = embed(self.models.embedders[0])  # while the collection is looked up: most are the default model's
        try:
            store, number = await self._checked_store(fields.collection)
            if number != 0:
                default.cancel()
            vector = await (default if number == 0 else embed(self.models.embedders[number]))
        except DecodeError as exc:
            raise HTTPException(422, f"file: {user_facing_reason(exc) or exc}") from None
        except replica_lost():
            raise HTTPException(503, "the embedding model was lost while answering; it is restarting: try again") from None
        # Chroma works off the event loop, so status polls are answered meanwhile.
        if by_text is not None:
            page = await asyncio.to_thread(text_top_k, store, vector, by_text.text, fields.k, fields.filters, fields.offset,
                                           fields.collapse, by_text.mode)
        else:
            page = await asyncio.to_thread(top_k, store, vector, fields.k, fields.filters, fields.offset, fields.collapse)
        return page.as_json()

    @app.get("/collections/{collection}/photos")
    async def photos(self, collection: str, fields: Annotated[ListingRequest, Query()]) -> dict:
        """The collection's photos with no query, newest capture first: `k`, `offset` and any search filter
        as query parameters."""
        store, _ = await self._existing_store(collection)
        page = await asyncio.to_thread(newest_first, store, fields.k, fields.filters, fields.offset, fields.collapse)
        return page.as_json()

    @app.get("/collections/{collection}/similar")
    async def similar(self, collection: str,
                      threshold: float = Query(DEFAULT_THRESHOLD, ge=SIMILAR_MIN_THRESHOLD, le=1),
                      job: bool = Query(False, description="run it as a Ray job whatever the collection's size")) -> Response:
        """The JSON of `similar --json`: exact copies, and groups of near-duplicates at cosine >= threshold (the
        strongest SIMILAR_MAX_PAIRS pairs; `truncated` says when there were more). A collection of more than
        SIMILAR_IN_APP_MAX records (or `job=true`) is a Ray job: 202 with its id, followed as an ingestion is,
        its status carrying the groups (`similar`) once it has succeeded."""
        store, _ = await self._existing_store(collection)
        if job or await asyncio.to_thread(store.count) > self.settings.similar_in_app_max:
            job_id = await asyncio.to_thread(self.jobs.submit_similar, collection, threshold)
            return JSONResponse(status_code=202, content={"job_id": job_id})
        found = await asyncio.to_thread(find_similar, store, threshold, self.settings.similar_in_app_max,
                                        self.settings.similar_max_pairs)
        return JSONResponse(found.as_json())

    async def _existing_store(self, collection: str) -> tuple[RecordStore, dict]:
        """The collection's store and its metadata; 404 when there is none."""

        def opened() -> tuple[RecordStore, dict]:
            with _store_answers(collection):
                store = self._store(collection)
                return store, store.metadata

        return await asyncio.to_thread(opened)

    async def _checked_store(self, collection: str) -> tuple[RecordStore, int]:
        """The collection's store, and the number of the app's model that wrote it: 404 when there is none, 409 when
        the app runs no model that wrote it."""
        store, metadata = await self._existing_store(collection)
        return store, await self._model_number(collection, metadata)

    def _decode(self, file: FileBytes, geometry: InputGeometry):
        try:
            with self.previews:
                return decode_file(file, geometry, defaults.MAX_PIXELS, self.settings.preview_max_pixels).pixels
        except DecodeError as exc:
            raise HTTPException(422, f"file: {exc}") from None

    @app.post("/caption")
    async def caption(self, file: UploadFile = File(...)) -> dict:
        upload = read_upload(file, self.settings.max_upload_bytes)
        picture = await asyncio.to_thread(self._decode, upload, CAPTION.geometry)
        return {"caption": await self.captioner.remote(picture)}

    @app.post("/text")
    async def text(self, file: UploadFile = File(...)) -> dict:
        """The lines of text in a photo, read by the TextReader (started by this request when none runs)."""
        upload = read_upload(file, self.settings.max_upload_bytes)
        picture = await asyncio.to_thread(self._decode, upload, TEXT.geometry)
        text = await self.text_reader.remote(picture)
        return {"text": text, "lines": text.split("\n") if text else []}

    @app.get("/collections/{collection}/people")
    async def people(self, collection: str) -> dict:
        """Every person the faces make: id, name (null until named), faces, and the face that shows them
        (`cover`, whose picture is `GET /collections/{collection}/faces/{id}/thumbnail`)."""
        store, _ = await self._existing_store(collection)
        return {"people": [person_json(person) for person in await asyncio.to_thread(store.people)]}

    @app.get("/collections/{collection}/people/{person}/faces")
    async def person_faces(self, collection: str, person: str) -> dict:
        store, _ = await self._existing_store(collection)
        return {"faces": [face_json(face) for face in await asyncio.to_thread(store.faces_of, person)]}

    @app.post("/collections/{collection}/people/{person}/name")
    async def name_person(self, collection: str, person: str, body: NameRequest) -> dict:
        """Name a person (a name no other person has: two people of one name are merged instead)."""
        store, _ = await self._existing_store(collection)
        return person_json(await asyncio.to_thread(store.name_person, person, body.name))

    @app.post("/collections/{collection}/people/merge")
    async def merge_people(self, collection: str, body: MergeRequest) -> dict:
        """Every face of `other` becomes `into`'s; `other` goes (its name passes to `into` where that has none)."""
        store, _ = await self._existing_store(collection)
        await asyncio.to_thread(store.merge_people, body.into, body.other)
        await self._audit("people merged", collection, f"{body.other} into {body.into}")
        return person_json(await asyncio.to_thread(store.person, body.into))

    @app.post("/collections/{collection}/faces/{face}/person")
    async def move_face(self, collection: str, face: str, body: MoveRequest) -> dict:
        """A face to another person, or to nobody (`null`): placed by hand, no regrouping moves it again."""
        store, _ = await self._existing_store(collection)
        await asyncio.to_thread(store.move_face, face, body.person)
        return face_json(await asyncio.to_thread(store.face, face))

    @app.post("/collections/{collection}/people/like")
    async def people_like(self, collection: str, file: UploadFile = File(...),
                          k: int = Query(LIKE_MAX, ge=1, le=50)) -> dict:
        """The people each face of an uploaded photo looks like, nearest first (by the FaceFinder, started by this
        request when none runs)."""
        store, _ = await self._existing_store(collection)
        upload = read_upload(file, self.settings.max_upload_bytes)
        picture = await asyncio.to_thread(self._decode, upload, FACES.geometry)
        found = await self.face_finder.remote(picture)
        return {"faces": [match.as_json() for match in await asyncio.to_thread(people_like, store, found, k)]}

    @app.post("/collections/{collection}/people/regroup")
    async def regroup_people(self, collection: str) -> dict:
        """Every face grouped into people again (named people and faces placed by hand stay as they are), the graph
        of a large collection's faces made by Ray tasks on the cluster: `people regroup`'s summary."""
        store, _ = await self._existing_store(collection)
        return await asyncio.to_thread(regroup, store)

    @app.get("/collections/{collection}/faces/{face}/thumbnail")
    def face_thumbnail(self, collection: str, face: str, size: int = Query(160, ge=MIN_SIZE, le=MAX_SIZE)) -> Response:
        """A square JPEG of one face, cut from its photo (read from the path its record holds)."""
        with _store_answers(collection):
            found = self._store(collection).face(face)
        metadata = self._record(collection, found.photo)
        try:
            file = recorded_file(recorded_path(metadata) or "", found.photo, int(metadata.get("file_size", -1)))
        except FileChanged as exc:
            raise HTTPException(410, str(exc)) from None
        try:
            with self.previews:
                jpeg = face_jpeg(file, found.box, size, self.settings.preview_max_pixels)
        except DecodeError as exc:
            raise HTTPException(422, f"cannot cut the face from {path_text(file.path)}: {exc}") from None
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @app.get("/ui", include_in_schema=False)
    def page_root(self) -> RedirectResponse:
        return RedirectResponse("ui/")  # relative, so it holds under any route prefix

    @app.get("/ui/", include_in_schema=False)
    def page_index(self) -> Response:
        return page.page_file("")

    @app.get("/ui/{name}", include_in_schema=False)
    def page_asset(self, name: str) -> Response:
        return page.page_file(name)
