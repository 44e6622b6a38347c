"""CLI: `python -m ray_pipeline ingest|watch|search|browse|similar|enrich|people|collections|keys`, the same locally
and under `ray job submit`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import typing
from dataclasses import replace

from ray_pipeline.core import defaults
from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.machine import this_machine
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.paths import FileFailure, path_text
from ray_pipeline.model import clip as clip_model
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.model.embedders import PRECISIONS
from ray_pipeline.model.faces import FaceFinder
from ray_pipeline.records.access_keys import SCOPES, Key, KeyBook
from ray_pipeline.records.collections import (
    check_new_collection,
    creation_metadata,
    delete_collection,
    list_collections,
    show_collection,
)
from ray_pipeline.records.enrichments import FACES, asked
from ray_pipeline.records.errors import MissingCollection
from ray_pipeline.records.filters import SearchFilters, first_error
from ray_pipeline.records.store import open_store, opened_client, opened_here
from ray_pipeline.records.target import StoreTarget, collection_name_problem
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.enrich_records import run_enrich
from ray_pipeline.runs.ingest import run_ingest
from ray_pipeline.runs.regroup import IN_PROCESS_MAX as REGROUP_IN_PROCESS_MAX
from ray_pipeline.runs.regroup import run_regroup
from ray_pipeline.runs.reindex import reindex
from ray_pipeline.runs.watch import run_watch
from ray_pipeline.search import query as search
from ray_pipeline.search.people import people_like, person_json
from ray_pipeline.search.words import MODES
from ray_pipeline.search.similar import DEFAULT_THRESHOLD, IN_PROCESS_MAX, MAX_PAIRS, find_similar
from ray_pipeline.steps.enrich import picture_for
from ray_pipeline.steps.summary import print_summary

ADMIN_BY_COMMAND = Key("command-line", "the command line", "admin", None, 0.0)  # who the audit log names for it
# Errors that mean "the job could not run": one line on stderr and a non-zero exit.
USER_ERRORS = (UserFacingError, OSError)
EXIT_CANNOT_RUN = 2


def _actors(value: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in value.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 1 <= parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError(f"expected N or MIN,MAX with 1 <= MIN <= MAX, got {value!r}")
    return parts[0], parts[1]


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {value!r}")
    return seconds


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, 0 or more, got {value!r}")
    return int(value)


def _collection(value: str) -> str:
    """Chroma's own rule for names, checked before any work (Chroma would raise deep inside the job)."""
    problem = collection_name_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(f"{value[:80]!r}: {problem}")
    return value


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", required=True, type=_collection, help="Chroma collection name")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--chroma-path", default=defaults.CHROMA_PATH, metavar="DIR", help=f"embedded Chroma folder (default {defaults.CHROMA_PATH})")
    where.add_argument("--chroma-url", metavar="URL", help="a Chroma server, e.g. http://chroma:8000; several, comma-separated "
                       "(always the same, in the same order): one collection sharded over them")


def _add_server_options(parser: argparse.ArgumentParser, whose: str) -> None:
    """Where a store is, with no collection named: `collections` and `keys`."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--chroma-path", default=defaults.CHROMA_PATH, metavar="DIR",
                       help=f"{whose} embedded Chroma folder (default {defaults.CHROMA_PATH})")
    where.add_argument("--chroma-url", metavar="URL", help=f"{whose} Chroma server (the first, of several)")


def _server(args) -> StoreTarget:
    return StoreTarget(collection="", path=None if args.chroma_url else os.path.abspath(args.chroma_path),
                       url=args.chroma_url.split(",")[0] if args.chroma_url else None)


def _add_model_options(parser: argparse.ArgumentParser, with_defaults: bool) -> None:
    """Ingest defaults to ViT-B-32/laion2b; search defaults to what the collection recorded."""
    parser.add_argument("--model", default=defaults.MODEL if with_defaults else None, metavar="NAME",
                        help="OpenCLIP architecture, or a path to an OpenCLIP model-config JSON (default ViT-B-32)")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", default=defaults.PRETRAINED if with_defaults else None, metavar="TAG",
                         help="OpenCLIP pretrained tag (default laion2b_s34b_b79k)")
    weights.add_argument("--checkpoint", metavar="FILE", help="a state dict of the architecture saved with torch.save")
    parser.add_argument("--allow-random-weights", action="store_true",
                        help="when the weights cannot be had, use seeded random ones (vectors are meaningless)")


def _add_precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the model's arithmetic: auto (fp16 on a GPU; bf16 on a CPU that computes in it natively, about "
                             "twice as fast as fp32; fp32 elsewhere), or one of them")


def _add_within_and_progress_options(parser: argparse.ArgumentParser) -> None:
    """What every command that reads files for the HTTP API takes: `ingest`, `watch`, `collections reindex`."""
    parser.add_argument("--within", action="append", default=[], metavar="DIR",
                        help="read only files whose real path (symlinks followed) is inside DIR; repeatable")
    parser.add_argument("--progress-id", metavar="ID", help="report live counts under this id (set by the HTTP API)")


def _add_ingest_options(parser: argparse.ArgumentParser) -> None:
    """What `ingest` and `watch` both take."""
    _add_store_options(parser)
    _add_model_options(parser, with_defaults=True)
    parser.add_argument("--batch-size", type=_positive, help="embedding batch size (default 256 on CUDA, 32 on CPU)")
    parser.add_argument("--actors", type=_actors, metavar="N|MIN,MAX", help="embedding actor pool size (default: one per GPU, or 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="torch.compile (auto: on for CUDA)")
    _add_precision_option(parser)
    parser.add_argument("--rehash", action="store_true",
                        help="read and hash every file; by default a file whose path, size and modification time match "
                             "its stored record is skipped unread")
    parser.add_argument("--errors", metavar="FILE", help="write one JSON line per failed file: {path, reason}")
    parser.add_argument("--max-pixels", type=_positive, default=defaults.MAX_PIXELS,
                        help=f"refuse images larger than this many pixels (default {defaults.MAX_PIXELS})")

    parser.add_argument("--caption", action="store_true",
                        help="after embedding, caption the photos through the Serve app's Captioner deployment")
    parser.add_argument("--read-text", action="store_true",
                        help="after embedding, read the text in the photos (PP-OCR) by a pool of its own: in this process, "
                             "Ray actors of the job, or the Serve app's TextReader; search then finds their words")
    parser.add_argument("--find-faces", action="store_true",
                        help="after embedding, find the faces in the photos (dlib) by a pool of its own, as --read-text, and "
                             "group them into people (`people`); search then filters by --person")
    parser.add_argument("--serve-app", default=defaults.SERVE_APP, metavar="NAME",
                        help="Serve application running the Captioner (and, for watch, the Embedder it uses when it runs "
                             "the same model) (default: default)")
    _add_within_and_progress_options(parser)
    parser.add_argument("--inline-max-files", type=_count, metavar="N",
                        help=f"at most N files to read run without a Ray job: on a running cluster (default "
                             f"{defaults.INLINE_MAX_FILES}), in this process or through its Serve app's Embedder; in watch, "
                             f"a batch of at most N files is embedded by the warm model, a larger burst by a Ray job (default "
                             f"{defaults.INLINE_MAX_FILES}). With no cluster running the expected time of each way decides "
                             f"unless N is given (0: always a Ray job)")
    parser.add_argument("--prune", action="store_true",
                        help="remove the records of files that are gone from the folders given, or hold other bytes now "
                             "(a record whose bytes another listed file holds takes that file's path instead)")
    parser.add_argument("--prune-missing-folders", action="store_true",
                        help="with --prune, prune under a folder even when it is missing, unreadable, an unmounted mount "
                             "point, or holds no photos while records point into it (by default such a folder removes nothing)")
    parser.add_argument("--paths-from", metavar="FILE",
                        help="the PATHs (files or folders) read from FILE, one per line, beside any given as arguments "
                             "(blank lines and lines starting with # left out): a list longer than a command line takes")
    parser.add_argument("--machine", default=this_machine(), metavar="NAME",
                        help="the machine whose files these are (default: PHOTO_MACHINE, else this host's name): records "
                             "say so, and --prune removes only this machine's, where several write one Chroma server")
    parser.add_argument("--uploads", metavar="DIR",
                        help="files under DIR are the Serve app's uploads (set by the HTTP API): one that fails is deleted, "
                             "not remembered")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ray_pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser("ingest", help="embed photos and RAW files into a Chroma collection")
    ingest.add_argument("paths", nargs="*", metavar="PATH", help="files or folders, walked recursively")
    ingest.add_argument("--manifest", metavar="FILE", help="text file (one path per line), or Parquet with a 'path' column: a file or a folder of "
                        "files, streamed by Ray Data")
    _add_ingest_options(ingest)
    ingest.add_argument("--dry-run", action="store_true", help="with --prune: list what would be removed, change nothing")

    watch = commands.add_parser("watch", help="ingest folders, then follow them: new and changed photos in, deleted ones out")
    watch.add_argument("paths", nargs="*", metavar="PATH", help="folders, followed recursively")
    _add_ingest_options(watch)
    watch.add_argument("--settle", type=_seconds, default=2.0, metavar="SECONDS",
                       help="a file is ingested once it has not changed for this long (default 2)")
    watch.add_argument("--poll", type=_seconds, metavar="SECONDS",
                       help="look for changes every SECONDS instead of waiting for file events (network file systems)")

    search = commands.add_parser("search", help="top-k photos for a text or an example photo")
    search.add_argument("text", nargs="?", help="what to look for")
    search.add_argument("--image", metavar="FILE", help="search with a photo instead of a text")
    search.add_argument("--mode", choices=MODES, default="both",
                        help="a text search ranks by CLIP's vector, by the words found in the photos' text, captions, "
                             "places and file names, or both fused (default both)")
    _add_results_options(search, k=5)
    _add_model_options(search, with_defaults=False)
    _add_precision_option(search)

    browse = commands.add_parser("browse", help="the collection's photos with no query, newest capture first")
    _add_results_options(browse, k=20)

    enrich = commands.add_parser("enrich", help="fill in what a collection's records lack: the text in the photos, "
                                 "their faces, captions")
    enrich.add_argument("--read-text", action="store_true", help="read the text in the photos that have none yet (PP-OCR)")
    enrich.add_argument("--find-faces", action="store_true",
                        help="find the faces in the photos not looked at yet (dlib), grouped into people")
    enrich.add_argument("--caption", action="store_true",
                        help="caption the photos that have none yet, through the Serve app's Captioner deployment")
    enrich.add_argument("--serve-app", default=defaults.SERVE_APP, metavar="NAME",
                        help="Serve application running the Captioner (default: default)")
    enrich.add_argument("--errors", metavar="FILE", help="write one JSON line per photo that failed: {path, reason}")
    _add_store_options(enrich)

    people = commands.add_parser("people", help="the people the faces in the photos make: list, name, merge, move a "
                                 "face, regroup, or find who a photo of a face looks like")
    people_commands = people.add_subparsers(dest="people_command", required=True)
    listing = people_commands.add_parser("list", help="every person: id, name, faces, the face that shows them")
    listing.add_argument("--json", action="store_true", help="print them as one JSON document")
    naming = people_commands.add_parser("name", help="give a person a name")
    naming.add_argument("person", metavar="PERSON", help="the person's id, or present name")
    naming.add_argument("name", metavar="NAME")
    merging = people_commands.add_parser("merge", help="the faces of OTHER become INTO's; OTHER goes")
    merging.add_argument("into", metavar="INTO", help="the person kept: id or name")
    merging.add_argument("other", metavar="OTHER", help="the person merged into INTO: id or name")
    moving = people_commands.add_parser("move", help="a face to another person, or to nobody (a regrouping leaves it)")
    moving.add_argument("face", metavar="FACE", help="the face's id (`people faces PERSON` lists them)")
    moving.add_argument("person", metavar="PERSON", nargs="?", help="id or name; left out with --nobody")
    moving.add_argument("--nobody", action="store_true", help="the face is nobody's")
    faces = people_commands.add_parser("faces", help="a person's faces: id, photo, box")
    faces.add_argument("person", metavar="PERSON", help="id or name")
    regroup = people_commands.add_parser("regroup", help="group every face into people again (Chinese whispers); named "
                                         "people and faces placed by hand stay as they are")
    regroup.add_argument("--in-process-max", type=_count, default=REGROUP_IN_PROCESS_MAX, metavar="N",
                         help=f"the graph of at most N faces is made in this process, of more by Ray tasks (default "
                              f"{REGROUP_IN_PROCESS_MAX})")
    like = people_commands.add_parser("like", help="the people the faces of a photo look like")
    like.add_argument("--image", required=True, metavar="FILE", help="a photo with faces")
    like.add_argument("--json", action="store_true", help="print the answer as one JSON document")
    for command in (listing, naming, merging, moving, faces, regroup, like):
        _add_store_options(command)

    collections = commands.add_parser("collections", help="the collections of a store: list, show, delete")
    collection_commands = collections.add_subparsers(dest="collections_command", required=True)
    collection_commands.add_parser("list", help="each collection: name, records, model")
    showing = collection_commands.add_parser("show", help="what a collection holds, as JSON")
    showing.add_argument("name", metavar="NAME", type=_collection)
    showing.add_argument("--failures", type=_count, default=0, metavar="N", help="list the first N failed files too")
    deleting = collection_commands.add_parser("delete", help="a collection and its companions (failures, faces, people)")
    deleting.add_argument("name", metavar="NAME", type=_collection)
    deleting.add_argument("--confirm", required=True, metavar="NAME", help="the collection's name, typed again")
    creating_collection = collection_commands.add_parser(
        "create", help="an empty collection of a model, with the enrichments every ingestion into it makes")
    creating_collection.add_argument("name", metavar="NAME", type=_collection)
    _add_model_options(creating_collection, with_defaults=True)
    for flag, what in (("--caption", "caption"), ("--read-text", "read the text in"), ("--find-faces", "find the faces in")):
        creating_collection.add_argument(flag, action="store_true", help=f"every ingestion into it will {what} its photos")
    reindexing = collection_commands.add_parser(
        "reindex", help="embed every record's file again with another model (paths, metadata, captions and other "
                        "enrichments kept), then swap: NAME answers from the new model, the old records stay as "
                        "NAME.before-<time> until deleted")
    reindexing.add_argument("name", metavar="NAME", type=_collection)
    _add_model_options(reindexing, with_defaults=True)
    _add_precision_option(reindexing)
    reindexing.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    reindexing.add_argument("--errors", metavar="FILE", help="write one JSON line per record left out: {path, reason}")
    reindexing.add_argument("--allow-left-out", action="store_true",
                            help="swap even when some records cannot be read again (gone, changed, failing, another "
                                 "machine's): they stay in the old records only; by default the reindex stops, nothing "
                                 "changed")
    _add_within_and_progress_options(reindexing)
    reindexing.add_argument("--machine", default=this_machine(), metavar="NAME",
                            help="this machine (default: PHOTO_MACHINE, else the host's name): other machines' records "
                                 "are left out, and reported")
    reindexing.add_argument("--inline-max-files", type=_count, metavar="N",
                            help="at most N files to read run without a Ray Data job (as ingest's)")
    for command in collection_commands.choices.values():
        _add_server_options(command, "the")

    keys_parser = commands.add_parser("keys", help="the Serve app's access keys, kept in its store: create, list, revoke")
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    creating = key_commands.add_parser("create", help="a new key; its secret is printed once")
    creating.add_argument("--name", required=True, help="what the key is for (\"family phones\")")
    creating.add_argument("--scope", required=True, choices=SCOPES, help="search; ingest (and search); admin (everything)")
    creating.add_argument("--collections", metavar="A,B", help="the collections it may use (default: every one)")
    key_commands.add_parser("list", help="every key: id, name, scope, collections, revoked (never a secret)")
    revoking = key_commands.add_parser("revoke", help="refused from the app's next request on")
    revoking.add_argument("key", metavar="KEY_ID")
    for command in key_commands.choices.values():
        _add_server_options(command, "the app's")

    similar = commands.add_parser("similar", help="exact copies, and groups of near-duplicate photos")
    similar.add_argument("--threshold", type=_cosine, default=DEFAULT_THRESHOLD, metavar="T",
                         help=f"near-duplicates: cosine of their vectors at least T (default {DEFAULT_THRESHOLD}, for ViT-B-32)")
    similar.add_argument("--in-process-max", type=_count, default=IN_PROCESS_MAX, metavar="N",
                         help=f"at most this many vectors are compared in this process, more by Ray tasks (default {IN_PROCESS_MAX})")
    _add_store_options(similar)
    similar.add_argument("--max-pairs", type=_positive, default=MAX_PAIRS, metavar="N",
                         help=f"keep the N strongest pairs at most; the output says when there were more (default {MAX_PAIRS})")
    similar.add_argument("--json", action="store_true", help="print the groups as one JSON document")
    return parser


def _cosine(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -2.0
    if not -1 <= number <= 1:
        raise argparse.ArgumentTypeError(f"expected a cosine between -1 and 1, got {value!r}")
    return number


def _add_results_options(parser: argparse.ArgumentParser, k: int) -> None:
    """A page of results, their filters, the collection, and --json: what `search` and `browse` share."""
    parser.add_argument("-k", type=_positive, default=k, help=f"number of results (default {k})")
    parser.add_argument("--offset", type=_count, default=0, help="skip this many results first: the next page (default 0)")
    parser.add_argument("--all", action="store_true",
                        help="a RAW file and its JPEG (a pair) as two results; by default one, the JPEG with its RAW")
    _add_filter_options(parser)
    _add_store_options(parser)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")


def _add_filter_options(parser: argparse.ArgumentParser) -> None:
    """One option per search filter (`--camera-model`, `--date-from`, ...), checked by the filters' own type."""
    group = parser.add_argument_group("filters (all that are given must hold)")
    for name, field in SearchFilters.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if bool in typing.get_args(field.annotation):
            group.add_argument(flag, dest=f"filter_{name}", action=argparse.BooleanOptionalAction, help=field.description)
        else:
            group.add_argument(flag, dest=f"filter_{name}", metavar=name.split("_")[-1].upper(), help=field.description)


def _filters(args, parser):
    """The search filters the options give; a usage error naming the option when one is malformed."""
    from pydantic import ValidationError


    given = {key.removeprefix("filter_"): value for key, value in vars(args).items() if key.startswith("filter_")}
    if given["folder"]:
        given["folder"] = os.path.abspath(given["folder"])  # on the command line, as for the paths to ingest
    try:
        return SearchFilters.parse(given)
    except ValidationError as exc:
        field, _, why = first_error(exc).partition(": ")
        name = field.split(".")[0]
        parser.error(f"--{name.replace('_', '-')}: {why}" if name in SearchFilters.model_fields else f"{field}: {why}")


def _target(args) -> StoreTarget:
    path = None if args.chroma_url else os.path.abspath(args.chroma_path)
    return StoreTarget(collection=args.collection, path=path, url=args.chroma_url)


def _write_errors(path: str, errors: list[FileFailure]) -> None:
    """All or nothing: the errors file appears complete or not at all."""
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, suffix=".tmp", encoding="utf-8") as f:
        for error in errors:
            f.write(json.dumps(error.as_json(), ensure_ascii=False) + "\n")
    os.replace(f.name, path)


def _paths(args, parser) -> list[str]:
    """The PATH arguments, and those of --paths-from (read as bytes: a name need not be UTF-8)."""
    if not args.paths_from:
        return list(args.paths)
    try:
        with open(args.paths_from, "rb") as f:
            lines = [os.fsdecode(line.strip()) for line in f.read().splitlines()]
    except OSError as exc:
        parser.error(f"--paths-from {args.paths_from}: {exc.strerror or exc}")
    return [*args.paths, *(line for line in lines if line and not line.startswith("#"))]


def _ingest(args, parser) -> int:
    config = _config(args, parser)
    if not config.paths and not args.manifest:
        parser.error("give PATH ... or --manifest FILE")
    if config.paths and args.manifest:
        parser.error("give PATH ... or --manifest FILE, not both")
    _check_errors_file(args, parser)
    if (args.dry_run or args.prune_missing_folders) and not args.prune:
        parser.error("--dry-run and --prune-missing-folders go with --prune")
    if args.prune and args.manifest:
        parser.error("--prune needs folders (PATH ...): a manifest names files, and prune looks for what left a folder")
    result = run_ingest(config)
    _stop_ray()  # flush the workers' forwarded logs first, so the summary is the last line
    if args.dry_run:  # the list is what was asked for
        for line in result.pruned:
            print(line.replace("removed: ", "would remove: ", 1))
    else:
        _print_some(result.pruned, "records removed")
    _report(args, result.summary, result.errors, result.random_weights)
    return 0


def _watch(args, parser) -> int:
    config = _config(args, parser)
    if not config.paths:
        parser.error("give the folders to watch: PATH ... or --paths-from FILE")
    _check_errors_file(args, parser)
    summary, errors, random_weights = run_watch(config, args.settle, args.poll)
    _stop_ray()
    _report(args, summary, errors, random_weights)
    return 0


def _check_errors_file(args, parser) -> None:
    """Before any work: the errors file can be written where asked."""
    if args.errors and not os.path.isdir(os.path.dirname(os.path.abspath(args.errors))):
        parser.error(f"--errors {args.errors}: no such folder for it")


def _config(args, parser) -> RunConfig:
    """What `ingest` or `watch` was asked for (watch: prune always, no manifest, no dry run)."""
    return RunConfig(
        target=_target(args),
        model=ModelSpec.asked(args.model, args.pretrained, args.checkpoint, args.allow_random_weights),
        paths=tuple(_paths(args, parser)),
        manifest=getattr(args, "manifest", None),
        batch_size=args.batch_size,
        actors=args.actors,
        device=args.device,
        compile=args.compile,
        precision=args.precision,
        max_pixels=args.max_pixels,
        caption=args.caption,
        read_text=args.read_text,
        find_faces=args.find_faces,
        serve_app=args.serve_app,
        progress_id=args.progress_id,
        rehash=args.rehash,
        within=tuple(os.path.realpath(d) for d in args.within),
        inline_max_files=args.inline_max_files,
        prune=args.prune or args.command == "watch",
        prune_missing_folders=args.prune_missing_folders,
        dry_run=getattr(args, "dry_run", False),
        uploads=os.path.realpath(args.uploads) if args.uploads else None,
        machine=args.machine,
    )


def _report(args, summary: dict, errors: list[FileFailure], random_weights: bool) -> None:
    """The end of a run: the errors file, the first failures, a warning on random weights, and the
    summary line, last."""
    if args.errors:
        _write_errors(args.errors, errors)
    _print_some([f"failed: {path_text(error.path)}: {error.reason}" for error in errors], "failed files",
                f" (see {args.errors})" if args.errors else "")
    if random_weights:
        print("WARNING: RANDOM WEIGHTS. These vectors come from an untrained model and are useless for "
              "real search; the collection's metadata says random_weights=true.", file=sys.stderr)
    print_summary(summary)


def _print_some(lines: list[str], what: str, more: str = "") -> None:
    """The first lines on stderr, and how many more there are."""
    for line in lines[:10]:
        print(line, file=sys.stderr)
    if len(lines) > 10:
        print(f"... and {len(lines) - 10} more {what}{more}", file=sys.stderr)


def _search(args, parser) -> int:
    """`search` (a text or a photo) and `browse` (neither: newest first), both with filters and pages."""
    text, image = getattr(args, "text", None) or None, getattr(args, "image", None)
    if args.command == "search" and bool(text) == bool(image):
        parser.error("give a TEXT or --image FILE")
    filters = _filters(args, parser)

    override = None
    if args.command == "search" and (args.model or args.checkpoint or args.pretrained or args.allow_random_weights):
        override = ModelSpec.asked(args.model, args.pretrained, args.checkpoint, args.allow_random_weights)
    page = search.search_page(_target(args), args.k, text, image, override, filters, args.offset, not args.all,
                              getattr(args, "precision", "auto"), getattr(args, "mode", "both"))
    if args.json:
        print(json.dumps(page.as_json()))
        return 0
    for rank, result in enumerate(page.results, args.offset + 1):
        caption = f"  {result['caption']}" if "caption" in result else ""
        if result["score"] is not None:
            first = f"{result['score']:.4f}"
        else:  # a listing's photo, or one that only the query's words found
            first = "words" if text else result["metadata"].get("datetime_original", "undated")
        print(f"{rank}. {first}  {result['path']}{caption}")
        for copy in (path for path in result["paths"] if path != result["path"]):
            print(f"   also at {copy}")
        if keys.UPLOAD_NAME in result["metadata"]:
            print(f"   uploaded as {result['name']}")
        if "place" in result:
            print(f"   at {result['place']}")
        if "text" in result:
            print(f"   text: {result['text'].splitlines()[0]}")
        if result.get("matched") and result["matched"] != ["vector"]:
            print(f"   matched: {', '.join(result['matched'])}")
        if "raw" in result:
            print(f"   RAW: {result['raw']['path']}")
    if not page.results:
        if args.offset:
            print(f"no results: none past the first {args.offset}")
        else:
            print("no results: " + ("the collection is empty" if filters.empty else "none match"))
    elif page.total is not None:
        print(f"{args.offset + 1}-{args.offset + len(page.results)} of {page.total}", file=sys.stderr)
    if page.warning:
        print(f"warning: {page.warning}", file=sys.stderr)
    return 0


def _enrich(args, parser) -> int:
    """`enrich`: the enrichments asked for, made for every record that lacks them; the summary line last."""
    enrichments = asked(args.caption, args.read_text, args.find_faces)
    if not enrichments:
        parser.error("give what to fill in: --read-text, --find-faces, --caption, or several")
    _check_errors_file(args, parser)
    result = run_enrich(_target(args), enrichments, args.serve_app)
    _stop_ray()
    if args.errors:
        _write_errors(args.errors, result.errors)
    _print_some([f"failed: {path_text(error.path)}: {error.reason}" for error in result.errors], "failed photos")
    print(json.dumps(result.summary))
    return 0


def _people(args, parser) -> int:
    """`people`: list, name, merge, move a face, a person's faces, regroup, or who a photo looks like."""
    command = args.people_command
    if command == "move" and bool(args.person) == args.nobody:
        parser.error("give the PERSON the face goes to, or --nobody")
    if command == "regroup":
        summary = run_regroup(_target(args), args.in_process_max)
        _stop_ray()
        print(json.dumps(summary))
        return 0
    with opened_here(_target(args)) as store:
        if store is None:
            raise MissingCollection(f"no collection {args.collection!r}: ingest it first")
        if command == "list":
            listed = store.people()
            if args.json:
                print(json.dumps({"people": [person_json(person) for person in listed]}))
            for shown in [] if args.json else listed:
                print(f"{shown.id}  {shown.name or '(no name)'}  {shown.faces} faces"
                      + (f"  {shown.cover.path}" if shown.cover else ""))
        elif command == "name":
            (person,) = store.resolve_people([args.person])
            named = store.name_person(person, args.name)
            print(f"{named.id} is {named.name}")
        elif command == "merge":
            into, other = store.resolve_people([args.into, args.other])
            store.merge_people(into, other)
            print(f"{other} merged into {into}")
        elif command == "move":
            to = store.resolve_people([args.person])[0] if args.person else None
            store.move_face(args.face, to)
            print(f"face {args.face} is now {to or 'nobody'}'s")
        elif command == "faces":
            (person,) = store.resolve_people([args.person])
            for face in store.faces_of(person):
                print(f"{face.id}  {face.path}  box {', '.join(f'{side:.3f}' for side in face.box)}")
        else:
            matches = people_like(store, FaceFinder().find(picture_for(FACES, args.image)))
            if args.json:
                print(json.dumps({"faces": [match.as_json() for match in matches]}))
            for number, match in enumerate([] if args.json else matches, 1):
                near = ", ".join(f"{like.name or like.id} ({distance:.3f})" for like, distance in match.people)
                print(f"face {number}: {near or 'nobody known'}")
            if not matches and not args.json:
                print("no face found in the photo")
    return 0


def _keys(args, parser) -> int:
    """`keys`: the Serve app's access keys, in its store (a server, or the embedded folder while the app is down)."""
    with opened_client(_server(args)) as client:
        book = KeyBook(client)
        if args.keys_command == "create":
            collections = [c.strip() for c in args.collections.split(",")] if args.collections else None
            key, secret = book.create(args.name, args.scope, collections)
            book.audit(ADMIN_BY_COMMAND, "key created", None, f"{key.id} {key.scope} {key.name!r}")
            print(json.dumps({**key.as_json(), "secret": secret}))
            print("the secret is shown this once: keep it now", file=sys.stderr)
        elif args.keys_command == "list":
            for key in book.keys():
                print(json.dumps(key.as_json()))
        else:
            key = book.revoke(args.key)
            book.audit(ADMIN_BY_COMMAND, "key revoked", None, f"{key.id} {key.name!r}")
            print(json.dumps(key.as_json()))
    return 0


def _collections(args, parser) -> int:
    """`collections`: list, show (JSON), create (what it holds, as JSON), reindex (its summary line, last), or
    delete with the name typed again (what was removed, as JSON)."""
    if args.collections_command == "reindex":
        return _reindex(args, parser)
    model = ModelSpec.asked(args.model, args.pretrained, args.checkpoint, args.allow_random_weights) \
        if args.collections_command == "create" else None
    resolved = clip_model.resolve(model)[0] if model is not None else None  # before the store is held: seconds
    with opened_client(_server(args)) as client:
        if resolved is not None:
            target = replace(_server(args), collection=args.name)
            check_new_collection(client, args.name)
            open_store(target, creation_metadata(resolved.collection_metadata(),
                                                 asked(args.caption, args.read_text, args.find_faces)), client=client)
            clip_model.warn_if_random(resolved, args.name)
            print(json.dumps(show_collection(client, args.name)))
            return 0
        if args.collections_command == "list":
            for entry in list_collections(client):
                print(f"{entry['name']}  {entry['count']} records  {entry['model']} ({entry['weights']})")
        elif args.collections_command == "show":
            print(json.dumps(show_collection(client, args.name, args.failures)))
        else:
            removed = delete_collection(client, args.name, args.confirm)
            KeyBook(client).audit(ADMIN_BY_COMMAND, "collection deleted", args.name,
                                  ", ".join(f"{name} ({count} records)" for name, count in removed.collections))
            print(json.dumps(removed.as_json()))
    return 0


def _reindex(args, parser) -> int:
    """`collections reindex`: as `reindex.reindex`; records left out go to stderr and `--errors`."""
    _check_errors_file(args, parser)
    config = RunConfig(target=replace(_server(args), collection=args.name, url=args.chroma_url),
                       model=ModelSpec.asked(args.model, args.pretrained, args.checkpoint, args.allow_random_weights),
                       device=args.device, precision=args.precision, within=tuple(os.path.realpath(d) for d in args.within),
                       machine=args.machine, progress_id=args.progress_id, inline_max_files=args.inline_max_files)
    done = reindex(config, args.allow_left_out)
    _stop_ray()
    if args.errors:
        _write_errors(args.errors, done.left_out)
    _print_some([f"left out: {path_text(left.path)}: {left.reason}" for left in done.left_out], "records left out",
                f" (see {args.errors})" if args.errors else "")
    if done.random_weights:
        print("WARNING: RANDOM WEIGHTS: the new vectors come from an untrained model", file=sys.stderr)
    print_summary(done.summary)
    return 0


def _similar(args, parser) -> int:
    """`similar`: exact copies (every path of one content), then near-duplicate groups, largest first."""
    found = find_similar(open_store(_target(args)), args.threshold, args.in_process_max, args.max_pairs)
    _stop_ray()
    if args.json:
        print(json.dumps(found.as_json()))
        return 0
    for member in found.exact:
        print(f"exact copies: {member.id[:12]}  " + "  ".join(member.paths))
    for number, group in enumerate(found.near, 1):
        print(f"near-duplicates {number} ({len(group.members)} photos, cosine {group.scores[-1][2]:.3f} to "
              f"{group.scores[0][2]:.3f}):")
        for member in group.members:
            print(f"  {member.path}" + "".join(f"  (also at {path})" for path in member.paths if path != member.path))
    print(f"{len(found.exact)} contents stored at several paths; {len(found.near)} groups of near-duplicates at cosine "
          f">= {found.threshold}", file=sys.stderr)
    if found.truncated:
        print(f"warning: more pairs than --max-pairs {args.max_pairs} are that close: the groups are made of the strongest; "
              "raise --threshold", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("ray_pipeline").setLevel(logging.INFO)
    parser = build_parser()
    args = parser.parse_args(argv)
    run = {"ingest": _ingest, "watch": _watch, "search": _search, "browse": _search, "similar": _similar,
           "enrich": _enrich, "people": _people, "keys": _keys, "collections": _collections}[args.command]
    try:
        return run(args, parser)
    except USER_ERRORS as exc:
        _stop_ray()  # first, so Ray's shutdown chatter does not follow the reason
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN


def _stop_ray() -> None:
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
