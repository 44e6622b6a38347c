"""The code's shape, read from its source: imports run one way, down the layers; there is no circle; no
project module is imported inside a function; and the layers that hold a file's steps, the records, the
model (and those under them) import no Ray at module level. A break fails naming the import."""

from __future__ import annotations

import ast
from dataclasses import dataclass

import pytest
from conftest import ROOT

pytestmark = pytest.mark.unit

# Top to bottom: a module imports from its own package and from the packages below its own, never above.
LAYERS = (
    "serve_deployments",  # the Serve app: the HTTP API over everything below
    "ray_pipeline.__main__", "ray_pipeline.cli",  # the command line
    "ray_pipeline.runs",  # how a run runs: the route, the runners (in process, warm, the Ray Data job), watch
    "ray_pipeline.search",  # search and similar
    "ray_pipeline.steps",  # the steps of one file and of one run
    "ray_pipeline.records",  # the records: the store interface, Chroma, shards, failures, filters, enrichments
    "ray_pipeline.model",  # CLIP, BLIP, the embedders
    "ray_pipeline.files",  # listing, reading, decoding, metadata, file events
    "ray_pipeline.cluster",  # joining Ray, the metrics
    "ray_pipeline.core",  # names, reasons, errors, defaults
)
NO_RAY_AT_MODULE_LEVEL = ("ray_pipeline.steps", "ray_pipeline.records", "ray_pipeline.model", "ray_pipeline.files",
                          "ray_pipeline.cluster", "ray_pipeline.core")
PROJECT = ("ray_pipeline", "serve_deployments")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    imported: str  # the module it imports
    line: int
    in_function: bool


def layer_of(module: str) -> int:
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imports_of(module: str, source: str, modules: set[str]) -> list[Import]:
    """Every import in a module's source, each named by the module it reaches (a name imported from a package
    that is a module of it counts as that module); those under `if TYPE_CHECKING:` are left out."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(module, alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.append(Import(module, sub if sub in modules else child.module, child.lineno, in_function))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


def problems(sources: dict[str, str]) -> list[str]:
    """What breaks the rules, one line each, naming the import."""
    modules = set(sources)
    every = [imp for module, source in sorted(sources.items()) for imp in imports_of(module, source, modules)]
    said = []
    for imp in every:
        where = f"{imp.module}:{imp.line} imports {imp.imported}"
        project = imp.imported.split(".")[0] in PROJECT
        if project and imp.in_function:
            said.append(f"{where} inside a function: import it at the top of the module")
        if project and layer_of(imp.imported) < layer_of(imp.module):
            said.append(f"{where}, a layer above its own: imports run down")
        ray = imp.imported == "ray" or imp.imported.startswith("ray.")
        if ray and not imp.in_function and imp.module.startswith(NO_RAY_AT_MODULE_LEVEL):
            said.append(f"{where} at module level: this layer imports Ray only inside the functions that use it")
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for imp in every:
        if not imp.in_function and imp.imported in modules and imp.imported != imp.module:
            graph[imp.module].add(imp.imported)
    said += [f"an import circle: {' -> '.join(circle)}" for circle in circles(graph)]
    return said


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """A circle through each module that is on one (depth first; each circle said once)."""
    found, done = [], set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            circle = path[path.index(module):] + [module]
            if not set(circle) <= done:
                found.append(circle)
                done.update(circle)
            return
        if module in done:
            return
        for imported in sorted(graph[module]):
            walk(imported, path + [module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])
    return found


def project_sources() -> dict[str, str]:
    sources = {}
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__" and not path.read_text().strip():
                continue  # a package, holding nothing of its own
            sources[".".join(parts)] = path.read_text()
    return sources


def test_the_project_keeps_the_rules():
    assert problems(project_sources()) == []


def test_every_module_is_in_a_layer():
    for module in project_sources():
        layer_of(module)


# The checker itself, on small made-up projects: each rule, broken once, is named.


def test_an_upward_import_is_named():
    found = problems({"ray_pipeline.core.errors": "from ray_pipeline.runs.ingest import run_ingest\n",
                      "ray_pipeline.runs.ingest": ""})
    assert found == ["ray_pipeline.core.errors:1 imports ray_pipeline.runs.ingest, a layer above its own: imports run down"]


def test_an_import_inside_a_function_is_named():
    found = problems({"ray_pipeline.runs.ingest": "def run():\n    from ray_pipeline.core.errors import UserFacingError\n",
                      "ray_pipeline.core.errors": ""})
    assert found == ["ray_pipeline.runs.ingest:2 imports ray_pipeline.core.errors inside a function: import it at the top "
                     "of the module"]


def test_a_circle_is_named():
    found = problems({"ray_pipeline.records.store": "from ray_pipeline.records.chroma import ChromaStore\n",
                      "ray_pipeline.records.chroma": "from ray_pipeline.records import store\n"})
    assert found == ["an import circle: ray_pipeline.records.chroma -> ray_pipeline.records.store -> "
                     "ray_pipeline.records.chroma"]


def test_ray_at_module_level_is_named_where_the_layer_takes_none():
    source = "import ray\nfrom ray.data import Datasink\n\ndef f():\n    import ray\n"
    found = problems({"ray_pipeline.steps.journey": source, "ray_pipeline.runs.bulk": source})
    assert found == [
        "ray_pipeline.steps.journey:1 imports ray at module level: this layer imports Ray only inside the functions that use it",
        "ray_pipeline.steps.journey:2 imports ray.data at module level: this layer imports Ray only inside the functions that "
        "use it"]


def test_heavy_libraries_inside_functions_and_type_checking_imports_are_fine():
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ray_pipeline.runs.ingest import run_ingest\n"
              "def f():\n    import torch\n    import chromadb\n")
    assert problems({"ray_pipeline.steps.journey": source, "ray_pipeline.runs.ingest": ""}) == []
