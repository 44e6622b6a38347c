"""The notebooks run top to bottom in a real kernel (nbclient, this venv's python3) with the tiny models,
against the session's Ray head and Serve app; executed copies go to test-artifacts/. The committed
notebooks carry no outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import requests
from conftest import ROOT
from nbclient import NotebookClient

from ray_pipeline.steps.summary import summary_in
from samples.sample_photos import write_library

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts"


def execute(name: str, env: dict, workdir: Path) -> nbformat.NotebookNode:
    """Run the notebook in a fresh kernel started in `workdir` with `env`; keep the executed copy."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute(env={**os.environ, "MPLBACKEND": "Agg", **env})
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        nbformat.write(notebook, ARTIFACTS / name)
    return notebook


def cell(notebook, tag: str):
    return next(c for c in notebook.cells if tag in c.metadata.get("tags", []))


def text_of(notebook, tag: str) -> list[str]:
    """The lines a tagged cell printed on stdout."""
    return "".join(o.text for o in cell(notebook, tag).outputs if o.get("name") == "stdout").splitlines()


def figures_in(notebook, tag: str) -> int:
    return sum("image/png" in o.get("data", {}) for o in cell(notebook, tag).outputs)


def ranked(lines: list[str]) -> list[list[str]]:
    """Result lines `1. 0.1234  /path  caption` as [rank, score, path, caption?]."""
    return [line.split(None, 3) for line in lines if line.split(".", 1)[0].isdigit()]


def test_committed_notebooks_have_no_outputs():
    """Committed clean, with every parameter in the first code cell (tagged as papermill expects)."""
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb", "02_cluster.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        codes = [c for c in notebook.cells if c.cell_type == "code"]
        assert codes[0].metadata.get("tags") == ["parameters"]
        for code in codes:
            assert code.outputs == [] and code.execution_count is None, f"{path.name}: a cell has outputs"


def test_quickstart(ray_head, service, tiny_model, tmp_path):
    """Sample photos written on a first run, ingested with captions (the session's Serve app runs the
    Captioner), then searched by text and by image."""
    photos = tmp_path / "photos"  # not there yet: the notebook writes the sample photos
    shows = write_library(str(tmp_path / "expected"))
    notebook = execute("01_quickstart.ipynb", {
        **ray_head["env"],
        "PHOTOS_DIR": str(photos),
        "CHROMA_PATH": str(tmp_path / "chroma"),
        "COLLECTION": "notebook-quickstart",
        "CLIP_MODEL": tiny_model["config"],
        "CLIP_CHECKPOINT": tiny_model["checkpoint"],
        "CAPTION": "1",
    }, tmp_path)

    assert text_of(notebook, "parameters") == [f"wrote sample photos to {photos}"]
    assert sorted(os.listdir(photos)) == sorted(shows)
    summary = json.loads(text_of(notebook, "ingest")[-1])
    assert (summary["discovered"], summary["embedded"], summary["failed"], summary["captioned"]) == (len(shows), len(shows), 0, len(shows))
    collection = json.loads(text_of(notebook, "collection")[-1])
    assert (collection["name"], collection["count"], collection["model"]) == ("notebook-quickstart", len(shows), "tiny-clip")

    by_text = ranked(text_of(notebook, "text-search"))
    assert len(by_text) == 4 and {Path(r[2]).name for r in by_text} <= set(shows)
    assert all(len(r) == 4 for r in by_text)  # every result shows its caption
    assert figures_in(notebook, "text-search") == 1

    lines = text_of(notebook, "image-search")
    query = lines[0].removeprefix("query: ")
    assert query == by_text[0][2]
    best = ranked(lines)[0]
    assert best[2] == query and float(best[1]) > 0.99  # the photo finds itself first
    assert figures_in(notebook, "image-search") == 1


def test_cluster(ray_head, service, tiny_model, tmp_path):
    """A job through the Job Submission API into the Serve app's collection, followed and searched over HTTP."""
    photos = service["allowed"] / "notebook"
    shows = write_library(str(photos))
    notebook = execute("02_cluster.ipynb", {
        "RAY_JOBS_ADDRESS": ray_head["dashboard"],
        "SERVE_URL": service["url"],
        "INGEST_API_TOKEN": service["token"],
        "PHOTOS_DIR": str(photos),
        "COLLECTION": "notebook-cluster",
        "CHROMA_PATH": service["env"]["CHROMA_PATH"],
        "CLIP_MODEL": tiny_model["config"],
        "CLIP_CHECKPOINT": tiny_model["checkpoint"],
    }, tmp_path)

    assert text_of(notebook, "api") == ["{'status': 'ok'}"]
    job_id = text_of(notebook, "submit")[0].split()[1].rstrip(":")
    progress = text_of(notebook, "follow")
    summary = summary_in(progress[-1])  # the log ends with the command's summary
    assert summary is not None, progress[-5:]
    assert (summary["discovered"], summary["embedded"], summary["failed"]) == (len(shows), len(shows), 0)
    final = next(line for line in reversed(progress) if "files processed" in line)
    assert "SUCCEEDED" in final and f"{len(shows)}/{len(shows)} files processed" in final
    assert figures_in(notebook, "throughput") == 1

    collection = json.loads(text_of(notebook, "text-search")[0])
    assert (collection["name"], collection["count"]) == ("notebook-cluster", len(shows))
    by_text = ranked(text_of(notebook, "text-search"))
    assert len(by_text) == 4 and all(Path(r[2]).parent == photos for r in by_text)
    image_lines = text_of(notebook, "image-search")
    assert ranked(image_lines)[0][2] == image_lines[0].removeprefix("query: ")

    listed = requests.get(f"{service['url']}/ingest/{job_id}", headers={"Authorization": f"Bearer {service['token']}"},
                          timeout=10).json()
    assert (listed["status"], listed["embedded"]) == ("SUCCEEDED", len(shows))
    assert service["token"] not in nbformat.writes(notebook)  # the token never reaches an output

