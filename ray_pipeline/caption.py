"""Caption (after embedding): ask the Serve `Captioner` for a caption of each stored photo that has
none, and write it into the record's `caption` metadata. Embeddings are never touched: a caption that
fails is reported, and running again fills it in."""

from __future__ import annotations

from ray_pipeline.decode import DEFAULT_MAX_PIXELS, DecodeError, InputGeometry
from ray_pipeline.errors import UserFacingError
from ray_pipeline.file_names import FileFailure
from ray_pipeline.journey import decode_file, read_file
from ray_pipeline.metrics import metrics
from ray_pipeline.store import RecordStore

CAPTIONER = "Captioner"
# BLIP's processor resizes to 384 x 384 without keeping the aspect ratio: send exactly that.
CAPTION_INPUT = InputGeometry(384, 384, "squash")
CHUNK = 32  # requests in flight at once; the Captioner batches them


class CaptionerMissing(UserFacingError):
    pass


def check_captioner(serve_app: str) -> None:
    """Captions need the Serve application's Captioner deployment running on this cluster."""
    from ray import serve

    try:
        serve.get_deployment_handle(CAPTIONER, app_name=serve_app)
    except Exception:
        raise CaptionerMissing(
            f"--caption needs the Serve application {serve_app!r} with its {CAPTIONER} deployment running on "
            "this Ray cluster (serve run serve_deployments.app:app)"
        ) from None


def caption_pixels(path: str):
    """The picture at `path` as the Captioner takes it: (384, 384, 3) uint8."""
    return decode_file(read_file(path), CAPTION_INPUT, DEFAULT_MAX_PIXELS).pixels


def caption_records(store: RecordStore, records: list[tuple[str, str]], serve_app: str, reporter) -> tuple[int, list[FileFailure]]:
    """Caption the records (id, path) that have no caption yet; returns (captioned, errors)."""
    from ray import serve

    handle = serve.get_deployment_handle(CAPTIONER, app_name=serve_app)
    paths = dict(records)
    todo = store.uncaptioned(sorted(paths)) if paths else []
    captioned, errors = 0, []
    for start in range(0, len(todo), CHUNK):
        requests, failed = [], []
        for record_id in todo[start : start + CHUNK]:
            try:
                requests.append((record_id, handle.caption.remote(caption_pixels(paths[record_id]))))
            except (OSError, DecodeError) as exc:
                failed.append(FileFailure(paths[record_id], f"caption: {exc}"))
        done_ids, captions = [], []
        for record_id, response in requests:
            try:
                captions.append(response.result(timeout_s=600))
                done_ids.append(record_id)
            except Exception as exc:  # a lost replica or a model error costs this caption only
                failed.append(FileFailure(paths[record_id], f"caption failed: {type(exc).__name__}: {exc}"[:500]))
        if done_ids:
            store.set_captions(done_ids, captions)
            metrics().captions.inc(len(done_ids), tags={"collection": store.target.collection})
        captioned += len(done_ids)
        errors += failed
        reporter.add({"captioned": len(done_ids), "caption_failed": len(failed)}, failed)
    return captioned, errors
