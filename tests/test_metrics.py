"""The pipeline's metrics reach Ray's metrics endpoint (what the dashboard's Prometheus/Grafana read)."""

from __future__ import annotations

import re
import urllib.request

from conftest import summary_of, wait_for

from samples.sample_photos import write_library


def scrape(url: str) -> str:
    return urllib.request.urlopen(url, timeout=10).read().decode()


def value(text: str, name: str, collection: str) -> float:
    """Sum of a metric's samples for one collection (0 when absent)."""
    pattern = re.compile(rf'^{name}\{{[^}}]*collection="{collection}"[^}}]*\}} ([0-9.e+]+)$', re.MULTILINE)
    return sum(float(v) for v in pattern.findall(text))


def test_counters_and_histograms_after_a_job(cli, ray_head, tmp_path, tiny_model_args):
    library = tmp_path / "photos"
    write_library(str(library))
    (library / "broken.jpg").write_bytes(b"not a photo")
    summary = summary_of(cli("ingest", str(library), "--collection", "metered", "--chroma-path", str(tmp_path / "c"),
                             "--inline-max-files", "0", *tiny_model_args))  # a Ray Data job, however few the files
    assert (summary["embedded"], summary["failed"]) == (6, 1)

    def exported():
        text = scrape(ray_head["metrics"])
        return text if value(text, "ray_photo_files_embedded_total", "metered") == 6 else None

    text = wait_for(exported, timeout=90, interval=2, what="the metrics on the endpoint")
    assert value(text, "ray_photo_files_discovered_total", "metered") == 7
    assert value(text, "ray_photo_files_failed_total", "metered") == 1
    assert value(text, "ray_photo_bytes_read_total", "metered") == sum(p.stat().st_size for p in library.iterdir())
    assert value(text, "ray_photo_decode_seconds_count", "metered") == 7  # the broken file was tried too
    assert value(text, "ray_photo_embed_batch_seconds_count", "metered") >= 1


def test_a_small_run_on_a_cluster_in_the_commands_own_process_is_on_the_metrics_too(cli, ray_head, tmp_path, tiny_model_args):
    """A few files on a running cluster are read in the command's process, no job's actors to start (embedded
    there, or by the cluster's Serve app where one of this model runs, as in the full suite); the cluster's
    dashboard counts them all the same."""
    library = tmp_path / "photos"
    write_library(str(library))
    completed = cli("ingest", str(library), "--collection", "metered-here", "--chroma-path", str(tmp_path / "c"), *tiny_model_args)
    assert summary_of(completed)["route"]["kind"] in ("in_process", "warm"), completed.stderr[-2000:]

    def exported():
        text = scrape(ray_head["metrics"])
        return text if value(text, "ray_photo_files_embedded_total", "metered-here") == 6 else None

    text = wait_for(exported, timeout=90, interval=2, what="the in-process run's metrics on the endpoint")
    assert value(text, "ray_photo_decode_seconds_count", "metered-here") == 6
