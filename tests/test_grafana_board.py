"""The Grafana board in cluster/grafana shows only metrics the code exports, and every one of them, under
the names Ray's Prometheus endpoint gives them (`ray_` before the name; `_total` after a counter's;
`_bucket`, `_sum`, `_count` after a histogram's; tests/test_metrics.py reads those names off a real job)."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

from ray_pipeline.cluster.metrics import PipelineMetrics

pytestmark = pytest.mark.unit

BOARD = ROOT / "cluster" / "grafana" / "photo-pipeline.json"


def exported() -> dict[str, set[str]]:
    """{the code's metric name: the series names Prometheus has of it}."""
    from ray.util.metrics import Histogram

    metrics = PipelineMetrics()
    every = [*metrics.files.values(), *metrics.enriched.values(), *(m for m in vars(metrics).values() if not isinstance(m, dict))]
    return {m._name: ({f"ray_{m._name}{s}" for s in ("_bucket", "_sum", "_count")} if isinstance(m, Histogram)
                      else {f"ray_{m._name}_total"}) for m in every}


def shown() -> set[str]:
    board = json.loads(BOARD.read_text())
    exprs = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    exprs += [variable["definition"] for variable in board["templating"]["list"] if "definition" in variable]
    return set(re.findall(r"\bray_photo_[a-z_]+", " ".join(exprs)))


def test_every_metric_on_the_board_is_exported_by_the_code():
    names = set().union(*exported().values())
    assert shown() <= names, sorted(shown() - names)


def test_every_metric_the_code_exports_is_on_the_board():
    missing = [name for name, series in exported().items() if not series & shown()]
    assert missing == []


def test_the_board_is_a_dashboard_grafana_loads():
    board = json.loads(BOARD.read_text())
    assert board["uid"] == "photo-pipeline" and board["title"]
    assert {"datasource", "collection"} <= {variable["name"] for variable in board["templating"]["list"]}
    for panel in board["panels"]:
        assert panel["type"] in ("timeseries", "stat") and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert all(target["refId"] and target["expr"] for target in panel["targets"])
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
