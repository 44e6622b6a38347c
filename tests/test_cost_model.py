"""The cost model (benchmarks/cost_model.py): its arithmetic on small figures checked by hand, the committed
figures and their sources, a GPU check's rate in place of an estimate, and cluster/README.md's section
being the script's own output."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import cost_model
from benchmarks.cost_model import (
    CPU_CORE,
    Cluster,
    Figure,
    Figures,
    NodeType,
    PhotoFormat,
    dollars_per_million,
    load_figures,
    read_gpu_check,
    throughput,
    with_gpu_check,
)

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- cost_model: begin -->", "<!-- cost_model: end -->"


def given(value: float) -> Figure:
    return Figure(value, True, "this test")


PHOTO = PhotoFormat("photo", read_s=given(0.02), decode_s=given(0.08))  # 0.1 s of one core: 10 images/s
GPU_NODE = NodeType("gpu node", cores=4, gpus=1, gpu="G", price_per_h=given(3.6))
CPU_NODE = NodeType("cpu node", cores=8, gpus=0, gpu="", price_per_h=given(0.72))
STORE = NodeType("store", cores=2, gpus=0, gpu="", price_per_h=given(0.36))


def small(**changes) -> Figures:
    figures = Figures(model="m", target_images_per_day=150 * 86400, formats=[PHOTO],
                      embed_per_s={CPU_CORE: given(5), "G": given(100)}, write_per_s=given(1000), store=STORE,
                      feeder=CPU_NODE, nodes=[CPU_NODE, GPU_NODE], check=(2, "photo", given(1)))
    return replace(figures, **changes)


def test_a_gpu_node_short_of_cores_is_bound_by_decoding_and_by_its_gpu_once_fed():
    # 4 cores: 0.5 reserved, 1 for the GPU's actor, 2 whole decode actors: 2 / 0.1 s = 20 images/s.
    alone = throughput(Cluster(GPU_NODE, 1, 0, 1), PHOTO, small())
    assert (alone.decode, alone.embed, alone.write, alone.bound) == (pytest.approx(20), 100, 1000, "decode")
    # Two 8-core nodes beside it: 20 - 0.5 - 1 = 18 decode actors, 180 images/s: the GPU's 100 bound it.
    fed = throughput(Cluster(GPU_NODE, 1, 2, 1), PHOTO, small())
    assert (fed.decode, fed.images_per_s, fed.bound) == (pytest.approx(180), 100, "embed")
    # One store taking 50 records/s: the writes bound it.
    assert throughput(Cluster(GPU_NODE, 1, 2, 1), PHOTO, small(write_per_s=given(50))).bound == "write"


def test_a_cpu_node_splits_its_cores_as_the_pipeline_plans():
    # 8 cores: 7.5 to share, 3 whole cores to the model (15 images/s), 4 decode actors (40 images/s).
    rate = throughput(Cluster(CPU_NODE, 1, 0, 1), PHOTO, small())
    assert (rate.decode, rate.embed, rate.bound) == (pytest.approx(40), pytest.approx(15), "embed")


def test_cores_to_feed_one_gpu_and_the_price_of_a_million_images():
    # 100 images/s x 0.1 s of a core = 10 decode cores, and the embedding actor's own.
    assert cost_model.cores_per_gpu(GPU_NODE, PHOTO, small()) == 11
    assert cost_model.cores_per_gpu(CPU_NODE, PHOTO, small()) is None
    assert dollars_per_million(3.6, 100) == pytest.approx(10)  # 10^6 images in 10^4 s, 2.78 h at $3.6
    row = next(r for r in cost_model.per_node(small()) if r.node == "gpu node")
    # The node and its store, $3.96/h, at its 20 images/s.
    assert (row.images_per_s, row.bound, row.dollars_per_million) == (pytest.approx(20), "decode", pytest.approx(55))


def test_a_cluster_for_the_target_grows_where_the_bottleneck_is():
    cluster = cost_model.sized(GPU_NODE, PHOTO, small())  # 150 images/s
    # 20 images/s, bound by decoding: a CPU node (10 decode actors, 100 images/s, as many as the GPU); a
    # second GPU node (13 decode actors, 130); a second CPU node (21 decode actors, 210; the GPUs 200).
    assert (cluster.workers, cluster.feeders, cluster.stores) == (2, 2, 1)
    assert throughput(cluster, PHOTO, small()).images_per_s >= 150
    assert cost_model.sized(GPU_NODE, PHOTO, small(write_per_s=given(100))).stores == 2


def test_the_committed_figures_load_and_every_one_has_a_source():
    figures = load_figures()
    assert figures.formats and figures.nodes and figures.feeder.gpus == 0

    def figures_in(value):
        if isinstance(value, dict):
            if "value" in value:
                yield value
            else:
                for inner in value.values():
                    yield from figures_in(inner)

    raw = list(figures_in(json.loads(cost_model.FIGURES.read_text())))
    assert len(raw) == 2 * len(figures.formats) + len(figures.embed_per_s) + 1 + len(figures.nodes) + 1 + 1
    for figure in raw:
        assert isinstance(figure["measured"], bool) and figure["source"].strip(), figure
        if not figure["measured"]:  # never passed off as a measurement
            assert figure["source"].startswith(("estimate", "assumed")), figure


GPU_CHECK = {"device": "cuda", "model": "ViT-B-32", "setup": {"gpu": "NVIDIA H100 80GB HBM3", "cores": 16},
             "pipeline_jpeg": {"stage_capacity_per_s": {"decode": 480.0, "embed": 9000.0}, "actors": {"embed_actors": [1, 1]}},
             "embedder": {"images_per_s": 12000.0}}


def test_a_gpu_check_line_replaces_the_estimate_of_its_gpu(tmp_path):
    output = tmp_path / "check.txt"
    output.write_text("[gpu_check] setup: 1.0 s\n" + json.dumps(GPU_CHECK) + "\n")
    figures = with_gpu_check(load_figures(), read_gpu_check(output))
    h100 = figures.embed_per_s["H100"]
    assert (h100.value, h100.measured) == (9000.0, True) and "NVIDIA H100 80GB HBM3" in h100.source
    assert figures.embed_per_s["L4"] == load_figures().embed_per_s["L4"]
    # Where the pipeline did not run (no Ray on that machine), the Embedder's model alone.
    embedder_only = with_gpu_check(load_figures(), {**GPU_CHECK, "pipeline_jpeg": {"error": "ModuleNotFoundError"}})
    assert embedder_only.embed_per_s["H100"].value == 12000.0


def test_a_gpu_check_of_another_model_or_device_or_gpu_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="cuda"):
        with_gpu_check(load_figures(), {**GPU_CHECK, "model": "tiny"})
    with pytest.raises(ValueError, match="add it"):
        with_gpu_check(load_figures(), {**GPU_CHECK, "setup": {"gpu": "NVIDIA A100"}})
    with pytest.raises(ValueError, match="add it"):  # a word of its name, not a part of one
        with_gpu_check(load_figures(), {**GPU_CHECK, "setup": {"gpu": "NVIDIA L40S"}})
    block = tmp_path / "block.json"  # as RESULTS.md keeps it: indented
    block.write_text(json.dumps({**GPU_CHECK, "device": "cpu"}, indent=1))
    with pytest.raises(SystemExit):
        cost_model.main(["--gpu-check", str(block)])
    assert "not ViT-B-32 on cpu" in capsys.readouterr().err


def test_the_readme_carries_the_scripts_output():
    """cluster/README.md's table is the script's output on the committed figures, so neither drifts."""
    readme = (ROOT / "cluster" / "README.md").read_text()
    section = readme[readme.index(BEGIN) + len(BEGIN):readme.index(END)]
    assert section.strip() == cost_model.render(load_figures()).strip(), \
        "run `python -m benchmarks.cost_model` and put its output in cluster/README.md"


def test_json_rows(capsys):
    cost_model.main(["--json"])
    rows = json.loads(capsys.readouterr().out)
    assert len(rows["per_node"]) == len(rows["for_target"]) == 3 * 6
    assert {row["bound"] for row in rows["per_node"]} <= {"decode", "embed", "write"}


def test_the_crossover_is_where_the_route_changes_its_mind():
    """The table's crossover is the route's own decision: at that many files a local Ray, one fewer this process;
    on up to 8 cores never (threads keep up), and sooner the more cores there are, sooner still in fp32."""
    from ray_pipeline.runs.costs import JPEG_DECODE_S, Machine
    from ray_pipeline.runs.route import RouteKind, RunFacts, choose_route

    assert [cost_model.crossover(cores, "bf16") for cores in (2, 4, 8)] == [None, None, None]
    found = [cost_model.crossover(cores, "bf16") for cores in (16, 32, 64)]
    assert found[0] > found[1] > found[2] > 0
    assert cost_model.crossover(16, "fp32") < found[0]
    for cores, files in zip((16, 32, 64), found):
        def route(count: int) -> RouteKind:
            return choose_route(RunFacts(to_read=count, decode_s=count * JPEG_DECODE_S, machine=Machine(cores, 0),
                                         precision="bf16")).kind

        assert (route(files - 1), route(files)) == (RouteKind.IN_PROCESS, RouteKind.RAY_DATA)
