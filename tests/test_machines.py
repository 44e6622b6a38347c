"""Two machines writing one Chroma server under the same paths (each laptop's ~/Pictures): each record knows the
machine whose file it came from, and a machine's prune never removes the other's records."""

from __future__ import annotations

import json
import shutil

from test_search_cli import run

from ray_pipeline.steps.summary import summary_in
from samples.sample_photos import write_many


def ingest(folder, server, machine: str, tiny_model_args) -> dict:
    done = run("ingest", folder, "--prune", "--machine", machine, "--collection", "shared", "--chroma-url", server.url,
               *tiny_model_args)
    assert done.returncode == 0, done.stderr[-3000:]
    return summary_in(done.stdout)


def machines(server) -> list[str]:
    """Each record's machine (records of both may hold one path)."""
    listed = json.loads(run("browse", "--json", "-k", "50", "--collection", "shared", "--chroma-url", server.url).stdout)
    return sorted(result["metadata"]["machine"] for result in listed["results"])


def test_a_machines_prune_leaves_the_other_machines_records(chroma_server, tiny_model_args, tmp_path):
    pictures = tmp_path / "Pictures"  # the same path on both laptops
    laptop_a, laptop_b = tmp_path / "a", tmp_path / "b"
    write_many(str(laptop_a), 2, seed=1)
    write_many(str(laptop_b), 1, seed=2)

    shutil.copytree(laptop_a, pictures)
    assert ingest(pictures, chroma_server, "laptop-a", tiny_model_args)["embedded"] == 2
    shutil.rmtree(pictures)
    shutil.copytree(laptop_b, pictures)  # the other laptop: other photos at the same path
    b_run = ingest(pictures, chroma_server, "laptop-b", tiny_model_args)
    assert (b_run["embedded"], b_run["removed"]) == (1, 0)  # laptop A's records are not laptop B's to prune
    assert machines(chroma_server) == ["laptop-a", "laptop-a", "laptop-b"]

    a_again = ingest(pictures, chroma_server, "laptop-a", tiny_model_args)  # laptop A's photos deleted since
    assert a_again["removed"] == 2
    assert machines(chroma_server) == ["laptop-b"]
