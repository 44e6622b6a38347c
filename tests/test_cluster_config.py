"""Every file under cluster/ loads and is valid for the Ray this project pins, and says what matters:
the same Ray and Python everywhere, GPUs requested where embedding runs, volumes, secrets from Secrets."""

from __future__ import annotations

import json
import os
import re
import sys
from importlib.metadata import version

import jsonschema
import pytest
import ray
import yaml
from conftest import ROOT
from ray.serve.schema import ServeDeploySchema

pytestmark = pytest.mark.unit

CLUSTER = ROOT / "cluster"
RAY_PIN = re.search(r'"ray\[data,serve\]==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
PYTHON_TAG = f"py{sys.version_info.major}{sys.version_info.minor}"


def load_all(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def test_the_pinned_ray_is_the_installed_one():
    assert RAY_PIN == ray.__version__


def check_scaling(application) -> None:
    """The `deployments:` entries name the app's own deployments, and keep the captioner, the text reader and the face
    finder scaling to zero."""
    from serve_deployments.captioner import Captioner
    from serve_deployments.embedder import Embedder
    from serve_deployments.ingress import Ingress
    from serve_deployments.inline_ingest import InlineIngest
    from serve_deployments.picture_models import FaceFinder, TextReader

    entries = {d.name: d for d in application.deployments}
    assert set(entries) <= {d.name for d in (Ingress, Embedder, InlineIngest, Captioner, TextReader, FaceFinder)}
    assert {"Embedder", "Captioner", "TextReader"} <= set(entries)
    assert 1 <= entries["Embedder"].autoscaling_config["min_replicas"] <= entries["Embedder"].autoscaling_config["max_replicas"]
    for to_zero in ("Captioner", "TextReader", "FaceFinder"):
        scaling = entries[to_zero].autoscaling_config
        assert scaling["min_replicas"] == 0 and scaling["downscale_to_zero_delay_s"] > 0


def test_serve_config_validates():
    config = ServeDeploySchema.model_validate(yaml.safe_load((CLUSTER / "serve_config.yaml").read_text()))
    (application,) = config.applications
    assert application.import_path == "serve_deployments.app:app"
    env = application.runtime_env["env_vars"]
    assert "INGEST_API_TOKEN" not in env and env["INGEST_API_TOKEN_FILE"]
    assert {"INGEST_ALLOWED_ROOTS", "INGEST_UPLOAD_DIR", "CLIP_MODEL", "BLIP_MODEL", "EMBED_NUM_GPUS"} <= set(env)
    check_scaling(application)


def test_launcher_config_validates_against_rays_schema():
    schema = json.loads((ROOT / os.path.dirname(ray.__file__) / "autoscaler/ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "aws-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert {"head", "cpu_worker", "gpu_worker"} <= set(types)
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert all(t["min_workers"] <= t["max_workers"] for t in types.values())
    assert f"ray{RAY_PIN}-{PYTHON_TAG}" in config["docker"]["image"]
    assert all("RAY_AUTH_MODE=token" in " ".join(c) for c in (config["head_start_ray_commands"], config["worker_start_ray_commands"]))


def test_dockerfile_builds_on_the_same_ray_and_python():
    base = re.search(r"^FROM (\S+)", (CLUSTER / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert base == f"rayproject/ray:{RAY_PIN}-{PYTHON_TAG}-gpu"


def check_ray_cluster_spec(spec: dict) -> None:
    assert spec["rayVersion"] == RAY_PIN
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in groups.values()]
    for pod in pods:
        for container in containers(pod):
            assert f"ray{RAY_PIN}-{PYTHON_TAG}" in container["image"]
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "ray-auth-token"
    for group in groups.values():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in containers(group["template"]):
            assert "/data/photos" in [m["mountPath"] for m in container["volumeMounts"]]
    gpu = containers(groups["gpu-workers"]["template"])[0]["resources"]
    assert gpu["requests"]["nvidia.com/gpu"] == gpu["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in containers(groups["cpu-workers"]["template"])[0]["resources"]["requests"]


def test_kuberay_raycluster():
    (cluster,) = load_all(CLUSTER / "kuberay/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    check_ray_cluster_spec(cluster["spec"])


def test_kuberay_rayservice():
    (service,) = load_all(CLUSTER / "kuberay/rayservice.yaml")
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    spec = service["spec"]
    check_ray_cluster_spec(spec["rayClusterConfig"])
    serve = ServeDeploySchema.model_validate(yaml.safe_load(spec["serveConfigV2"]))
    env = serve.applications[0].runtime_env["env_vars"]
    token_dir = os.path.dirname(env["INGEST_API_TOKEN_FILE"])
    head = spec["rayClusterConfig"]["headGroupSpec"]["template"]
    volumes = {v["name"]: v for v in head["spec"]["volumes"]}
    mounted = {m["mountPath"]: m["name"] for m in containers(head)[0]["volumeMounts"]}
    assert volumes[mounted[token_dir]]["secret"]["secretName"] == "photo-ingest-token"
    assert env["CHROMA_URL"] == "http://chroma:8000"
    check_scaling(serve.applications[0])
    (same,) = ServeDeploySchema.model_validate(yaml.safe_load((CLUSTER / "serve_config.yaml").read_text())).applications
    assert serve.applications[0].deployments == same.deployments  # one scaling, wherever the app is deployed


def check_chroma_servers(path) -> tuple[dict, dict]:
    """A StatefulSet of `chroma run` servers of the installed Chroma's major version, each writing to its
    own persistent volume, and their Service on port 8000."""
    statefulset, service = load_all(path)
    assert (statefulset["kind"], service["kind"]) == ("StatefulSet", "Service")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"].split(":")[1].split(".")[0] == version("chromadb").split(".")[0]
    data_path = container["args"][container["args"].index("--path") + 1]
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {"name": claim, "mountPath": data_path} in container["volumeMounts"]
    assert service["spec"]["ports"][0]["port"] == 8000
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    return statefulset, service


def test_chroma_server_manifests():
    _, service = check_chroma_servers(CLUSTER / "kuberay/chroma.yaml")
    assert service["metadata"]["name"] == "chroma"


def test_sharded_chroma_manifests():
    """Each shard a pod with a stable name (a headless Service); the list of servers the README and the
    manifest give is every pod, in pod order, and reads as a sharded store."""
    from ray_pipeline.records.target import StoreTarget

    statefulset, service = check_chroma_servers(CLUSTER / "kuberay/chroma-sharded.yaml")
    name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
    assert service["spec"]["clusterIP"] == "None" and service["metadata"]["name"] == statefulset["spec"]["serviceName"]
    urls = ",".join(f"http://{name}-{i}.{service['metadata']['name']}:8000" for i in range(replicas))
    assert statefulset["metadata"]["annotations"]["photo-embeddings/chroma-url"] == urls
    readme = (CLUSTER / "README.md").read_text()
    assert f"CHROMA_URL: {urls}" in readme and f"--chroma-url {urls}" in readme
    for serve_config in ("serve_config.yaml", "kuberay/rayservice.yaml"):
        assert f"# CHROMA_URL: {urls}" in (CLUSTER / serve_config).read_text()
    target = StoreTarget("photos", url=urls)
    assert target.sharded and len(target.shards()) == replicas >= 2
