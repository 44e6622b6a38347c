"""The cost model: images/s and dollars per million images for a few node types, recomputed from the
per-image costs the benchmarks measured (benchmarks/cost_figures.json, every figure with its source).

    python -m benchmarks.cost_model                        # the Markdown of cluster/README.md's "Cost model"
    python -m benchmarks.cost_model --gpu-check FILE       # a GPU's measured rate in place of its estimate
    python -m benchmarks.cost_model --figures FILE --json  # your own figures and prices; rows as JSON

A cluster's cores are shared as the pipeline shares them (`ray_pipeline.plan.plan_actors`: a reserve for
the writes, one core per GPU's embedding actor, the rest decoding); each stage sustains its cores (or
GPUs, or Chroma nodes) over its cost per image, and the slowest stage is the cluster's rate.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ray_pipeline.runs.costs import JPEG_DECODE_S, Machine, expected
from ray_pipeline.runs.plan import plan_actors
from ray_pipeline.steps.summary import last_json_line

FIGURES = Path(__file__).with_name("cost_figures.json")
CPU_CORE = "CPU core"  # the key of the CPU's embedding rate, per core


@dataclass(frozen=True)
class Figure:
    value: float
    measured: bool
    source: str  # where it was measured, or how it was estimated


@dataclass(frozen=True)
class PhotoFormat:
    name: str
    read_s: Figure  # seconds of one core to read and hash one file
    decode_s: Figure  # seconds of one core to decode it at the model's input size

    @property
    def core_s(self) -> float:
        """What one file costs a decode actor: it reads, hashes and decodes."""
        return self.read_s.value + self.decode_s.value


@dataclass(frozen=True)
class NodeType:
    name: str
    cores: int
    gpus: int
    gpu: str  # the key of its GPU's embedding rate ("" without a GPU)
    price_per_h: Figure


@dataclass(frozen=True)
class Figures:
    model: str
    target_images_per_day: int
    formats: list[PhotoFormat]
    embed_per_s: dict[str, Figure]  # images/s of one GPU, or of one CPU core
    write_per_s: Figure  # records/s one Chroma node takes
    store: NodeType
    feeder: NodeType  # the CPU-only node added to feed GPUs
    nodes: list[NodeType]
    check: tuple[int, str, Figure]  # (cores, format, images/s measured) of a run on one small machine


@dataclass(frozen=True)
class Cluster:
    worker: NodeType
    workers: int
    feeders: int  # CPU-only nodes beside the workers
    stores: int  # Chroma nodes


@dataclass(frozen=True)
class Throughput:
    """What each stage of a cluster sustains, images/s."""

    decode: float
    embed: float
    write: float

    @property
    def images_per_s(self) -> float:
        return min(self.decode, self.embed, self.write)

    @property
    def bound(self) -> str:
        return min(("decode", "embed", "write"), key=lambda stage: getattr(self, stage))


@dataclass(frozen=True)
class NodeRow:
    format: str
    node: str
    images_per_s: float
    bound: str
    cores_per_gpu: int | None
    dollars_per_million: float


@dataclass(frozen=True)
class SizedRow:
    format: str
    worker: str
    workers: int
    feeders: int
    stores: int
    images_per_s: float
    dollars_per_day: float
    dollars_per_million: float


def _figure(raw: dict) -> Figure:
    return Figure(float(raw["value"]), bool(raw["measured"]), raw["source"])


def _node(name: str, raw: dict) -> NodeType:
    return NodeType(name, raw["cores"], raw["gpus"], raw.get("gpu", ""), _figure(raw["price_per_h"]))


def load_figures(path: Path = FIGURES) -> Figures:
    raw = json.loads(path.read_text())
    nodes = {name: _node(name, node) for name, node in raw["node_types"].items()}
    check = raw["check"]
    return Figures(
        model=raw["model"], target_images_per_day=raw["target_images_per_day"],
        formats=[PhotoFormat(name, _figure(f["read_s"]), _figure(f["decode_s"])) for name, f in raw["formats"].items()],
        embed_per_s={name: _figure(f) for name, f in raw["embed_images_per_s"].items()},
        write_per_s=_figure(raw["write_records_per_s"]), store=_node(raw["store_node"]["name"], raw["store_node"]),
        feeder=nodes[raw["feeder_node"]], nodes=list(nodes.values()),
        check=(check["cores"], check["format"], _figure(check["images_per_s"])))


def gpu_check_rate(line: dict) -> tuple[float, str]:
    """Images/s of one GPU from a benchmarks.gpu_check line: the pipeline's embedding stage when it ran,
    else the Embedder's model alone (where Ray is missing, only that part runs)."""
    run = line.get("pipeline_jpeg") or {}
    embed = (run.get("stage_capacity_per_s") or {}).get("embed")
    if embed:
        return embed / max(run["actors"]["embed_actors"]), "the pipeline's embedding stage on 12 MP JPEGs"
    embedder = (line.get("embedder") or {}).get("images_per_s")
    if embedder:
        return embedder, "the Embedder's model alone, batches of 64"
    raise ValueError("the gpu_check line has no embedding rate (neither pipeline_jpeg nor embedder ran)")


def with_gpu_check(figures: Figures, line: dict) -> Figures:
    """The figures with the checked GPU's measured rate in place of its estimate."""
    if line.get("device") != "cuda" or line.get("model") != figures.model:
        raise ValueError(f"a gpu_check of {figures.model} on cuda is needed, not {line.get('model')} on {line.get('device')}")
    gpu = (line.get("setup") or {}).get("gpu", "")
    name = next((name for name in figures.embed_per_s if name != CPU_CORE and name in gpu.split()), None)  # L4, not L40S
    if name is None:
        raise ValueError(f"no GPU of the figures ({', '.join(figures.embed_per_s)}) is named in {gpu!r}: add it")
    rate, how = gpu_check_rate(line)
    measured = Figure(round(rate, 1), True, f"measured: benchmarks.gpu_check on {gpu}, {how}")
    return replace(figures, embed_per_s={**figures.embed_per_s, name: measured})


def read_gpu_check(path: Path) -> dict:
    """The check's JSON line from its output, or its indented block as RESULTS.md keeps it."""
    text = path.read_text()
    return last_json_line(text, '{"device"') or json.loads(text)


def throughput(cluster: Cluster, photo: PhotoFormat, figures: Figures) -> Throughput:
    """The cluster's stages under the pipeline's own plan of its cores. Without a GPU, one embedding actor
    per node (`--actors N,N`): the default plan's single actor cannot hold more cores than a node has."""
    cores = cluster.worker.cores * cluster.workers + figures.feeder.cores * cluster.feeders
    gpus = cluster.worker.gpus * cluster.workers
    if gpus:
        plan = plan_actors("cuda", None, cores, gpus)
        per_actor = figures.embed_per_s[cluster.worker.gpu].value
    else:
        plan = plan_actors("cpu", (cluster.workers, cluster.workers), cores, 0)
        per_actor = plan.embed_cpus * figures.embed_per_s[CPU_CORE].value
    return Throughput(decode=plan.decode_actors * plan.decode_cpus / photo.core_s,
                      embed=plan.embed_actors[1] * per_actor,
                      write=cluster.stores * figures.write_per_s.value)


def price_per_h(cluster: Cluster, figures: Figures) -> float:
    return (cluster.worker.price_per_h.value * cluster.workers + figures.feeder.price_per_h.value * cluster.feeders
            + figures.store.price_per_h.value * cluster.stores)


def dollars_per_million(price: float, images_per_s: float) -> float:
    return price / (images_per_s * 3600) * 1e6


def cores_per_gpu(node: NodeType, photo: PhotoFormat, figures: Figures) -> int | None:
    """Cores that keep one GPU busy: its decode cores, plus the one its embedding actor holds."""
    if not node.gpus:
        return None
    return math.ceil(figures.embed_per_s[node.gpu].value * photo.core_s) + 1


def per_node(figures: Figures) -> list[NodeRow]:
    """Each node type alone, writing to one Chroma node."""
    rows = []
    for photo in figures.formats:
        for node in figures.nodes:
            cluster = Cluster(node, 1, 0, 1)
            rate = throughput(cluster, photo, figures)
            rows.append(NodeRow(photo.name, node.name, rate.images_per_s, rate.bound, cores_per_gpu(node, photo, figures),
                                dollars_per_million(price_per_h(cluster, figures), rate.images_per_s)))
    return rows


def fed(node: NodeType, feeders: int, photo: PhotoFormat, figures: Figures) -> tuple[Cluster, Throughput]:
    """One node beside `feeders` CPU-only nodes, with the Chroma nodes its decoding and embedding need."""
    cluster = Cluster(node, 1, feeders, 0)
    rate = throughput(cluster, photo, figures)
    cluster = replace(cluster, stores=math.ceil(min(rate.decode, rate.embed) / figures.write_per_s.value))
    return cluster, throughput(cluster, photo, figures)


def sized(node: NodeType, photo: PhotoFormat, figures: Figures) -> Cluster:
    """The smallest cluster of `node` workers (and, for GPU nodes, CPU-only feeders) that makes the target:
    one node at a time where the bottleneck is, then the Chroma nodes for the target's writes."""
    target = figures.target_images_per_day / 86400
    cluster = Cluster(node, 1, 0, 0)
    while min((rate := throughput(cluster, photo, figures)).decode, rate.embed) < target:
        if node.gpus and rate.decode < rate.embed:
            cluster = replace(cluster, feeders=cluster.feeders + 1)
        else:
            cluster = replace(cluster, workers=cluster.workers + 1)
    return replace(cluster, stores=math.ceil(target / figures.write_per_s.value))


def for_target(figures: Figures) -> list[SizedRow]:
    rows = []
    for photo in figures.formats:
        for node in figures.nodes:
            cluster = sized(node, photo, figures)
            rate, price = throughput(cluster, photo, figures).images_per_s, price_per_h(cluster, figures)
            rows.append(SizedRow(photo.name, node.name, cluster.workers, cluster.feeders, cluster.stores, rate, 24 * price,
                                 dollars_per_million(price, rate)))
    return rows


def shared_cores_rate(cores: int, photo: PhotoFormat, figures: Figures) -> float:
    """On a machine too small for the plan to hold whole cores, decoding and the model take turns on all
    of them: the cores over the sum of the costs."""
    return cores / (photo.core_s + 1 / figures.embed_per_s[CPU_CORE].value)


CROSSOVER_CORES = (2, 4, 8, 16, 32, 64)


def crossover(cores: int, precision: str, most: int = 10**7) -> int | None:
    """With no cluster running, the fewest 12-MP JPEGs for which the route's expected times (`runs.costs`, the
    very figures the route decides by) make a local Ray faster than the command's own process; None where the
    process is faster at any size up to `most`."""
    def ray_faster(files: int) -> bool:
        seconds = expected(files * JPEG_DECODE_S, files, Machine(cpus=cores, gpus=0), precision)
        return seconds.local_ray < seconds.in_process

    if not ray_faster(most):
        return None
    low, high = 1, most  # the process is faster at low (it starts sooner), Ray at high: bisect
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if ray_faster(middle) else (middle, high)
    return high


def _n(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _files(count: int | None) -> str:
    return "never: this process" if count is None else f"{count:,}"


def render(figures: Figures) -> str:
    """The Markdown that cluster/README.md carries between its cost model markers."""
    jpeg = figures.formats[0]
    lines = [f"Per-image costs ({figures.model}); every figure not measured is an estimate, said so:", "",
             "| figure | value | measured | source |", "|---|---|---|---|"]
    for photo in figures.formats:
        for what, figure in (("read and hash, s of one core", photo.read_s), ("decode, s of one core", photo.decode_s)):
            lines.append(f"| {photo.name}: {what} | {figure.value:g} | {'yes' if figure.measured else 'no'} | {figure.source} |")
    for name, figure in figures.embed_per_s.items():
        lines.append(f"| embed, images/s of one {name} | {figure.value:g} | {'yes' if figure.measured else 'no'} | {figure.source} |")
    lines.append(f"| write, records/s of one Chroma node | {figures.write_per_s.value:g} | "
                 f"{'yes' if figures.write_per_s.measured else 'no'} | {figures.write_per_s.source} |")
    for node in (*figures.nodes, figures.store):
        lines.append(f"| {node.name}: $ per hour | {node.price_per_h.value:g} | no | {node.price_per_h.source} |")
    lines += ["", "**One node of each type**, writing to one Chroma node ($ counts both):", "",
              "| photos | node | images/s | bound by | cores to feed one GPU | $ per 10^6 images |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.format} | {r.node} | {_n(r.images_per_s)} | {r.bound} | {r.cores_per_gpu or '-'} | "
              f"{r.dollars_per_million:.2f} |" for r in per_node(figures)]
    lines += ["", f"**Where the bottleneck moves** ({jpeg.name}): one GPU node, with nodes of {figures.feeder.name} added "
              "until its GPU is busy; with one Chroma node, then with the Chroma nodes its rate needs:", "",
              "| node | CPU nodes added | one Chroma node: images/s | bound by | Chroma nodes needed | images/s | bound by "
              "| $ per 10^6 images |", "|---|---|---|---|---|---|---|---|"]
    for node in (n for n in figures.nodes if n.gpus):
        feeders, bound = 0, "decode"
        while bound == "decode":
            cluster, rate = fed(node, feeders, jpeg, figures)
            one_store = throughput(replace(cluster, stores=1), jpeg, figures)
            bound = rate.bound
            lines.append(f"| {node.name} | {feeders} | {_n(one_store.images_per_s)} | {one_store.bound} | {cluster.stores} | "
                         f"{_n(rate.images_per_s)} | {bound} | "
                         f"{dollars_per_million(price_per_h(cluster, figures), rate.images_per_s):.2f} |")
            feeders = 2 * feeders or 1
    target = figures.target_images_per_day
    lines += ["", f"**A cluster for {target:,} images in a day** ({_n(target / 86400)} images/s):", "",
              "| photos | worker nodes | CPU nodes added | Chroma nodes | images/s | $ per day | $ per 10^6 images |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.format} | {r.workers} x {r.worker} | {r.feeders} | {r.stores} | {_n(r.images_per_s)} | "
              f"{r.dollars_per_day:,.0f} | {r.dollars_per_million:.2f} |" for r in for_target(figures)]
    lines += ["", "**No cluster: this command's process or a local Ray.** The route takes the way its expected time says "
              "is faster (`ray_pipeline/runs/costs.py`); the fewest 12-MP JPEGs for which a local Ray wins, by cores:", "",
              "| cores | ViT-B-32 in bf16 | in fp32 |", "|---|---|---|"]
    lines += [f"| {cores} | {_files(crossover(cores, 'bf16'))} | {_files(crossover(cores, 'fp32'))} |" for cores in CROSSOVER_CORES]
    cores, name, measured = figures.check
    photo = next(p for p in figures.formats if p.name == name)
    lines += ["", f"**Check against a measured run**: on {cores} cores shared by decoding and the model, the figures give "
              f"{_n(shared_cores_rate(cores, photo, figures))} images/s of {name}; measured {_n(measured.value)} "
              f"({measured.source})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figures", type=Path, default=FIGURES, help="the figures and prices (default: the committed ones)")
    parser.add_argument("--gpu-check", type=Path, help="a benchmarks.gpu_check output: its GPU's measured rate replaces the estimate")
    parser.add_argument("--json", action="store_true", help="the rows as JSON instead of Markdown")
    args = parser.parse_args(argv)
    figures = load_figures(args.figures)
    if args.gpu_check:
        try:
            figures = with_gpu_check(figures, read_gpu_check(args.gpu_check))
        except ValueError as exc:
            parser.error(str(exc))
    if args.json:
        print(json.dumps({"per_node": [asdict(r) for r in per_node(figures)],
                          "for_target": [asdict(r) for r in for_target(figures)]}, indent=1))
    else:
        print(render(figures), end="")


if __name__ == "__main__":
    main()
