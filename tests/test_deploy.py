"""The deployment files in deploy/ (not applied here): they parse, carry the fields KubeRay,
`ray up` and SLURM need, and run the README's image and command at the locked Ray version."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib

import pytest
import yaml

from tests.conftest import REPO
from vidablate.sweep.cli import check_overrides

DEPLOY = REPO / "deploy"
README = (REPO / "README.md").read_text()


def _readme_image() -> str:
    m = re.search(r"docker build -f deploy/Dockerfile -t (\S+) \.", README)
    assert m, "the README's cluster section names no image"
    return m.group(1)


def _readme_command() -> str:
    m = re.search(r"^(vidablate ablate space=\S+ storage_path=\$VIDABLATE_STORAGE_PATH)$",
                  README, re.M)
    assert m, "the README's cluster section names no command"
    return m.group(1)


def _ray_version() -> str:
    m = re.search(r"^ray==(\S+)$", (REPO / "requirements.lock").read_text(), re.M)
    assert m
    return m.group(1)


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["template"]["spec"]["containers"]


def test_image_is_the_projects_version_at_the_locked_ray():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert _readme_image() == f"vidablate:{version}"
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"ARG BASE=rayproject/ray:{_ray_version()}-py311" in dockerfile
    assert "pip install --no-cache-dir -r requirements.lock" in dockerfile


@pytest.mark.parametrize("name,kind", [("rayjob.yaml", "RayJob"),
                                       ("raycluster.yaml", "RayCluster")])
def test_kuberay_manifests(name, kind):
    doc = yaml.safe_load((DEPLOY / "kuberay" / name).read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind and doc["metadata"]["name"]
    spec = doc["spec"]["rayClusterSpec"] if kind == "RayJob" else doc["spec"]
    assert spec["rayVersion"] == _ray_version()
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    groups = [head, *spec["workerGroupSpecs"]]
    for group in groups:
        for c in _containers(group):
            assert c["image"] == _readme_image()
            refs = {next(iter(r)) for r in c["envFrom"]}
            assert refs == {"configMapRef", "secretRef"}, c["name"]
            assert c["resources"]["requests"] == c["resources"]["limits"]
    for worker in spec["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
        assert all("nvidia.com/gpu" in c["resources"]["limits"] for c in _containers(worker))
    if kind == "RayJob":
        assert doc["spec"]["entrypoint"] == _readme_command()
        assert doc["spec"]["shutdownAfterJobFinishes"] is True


def test_ray_up_cluster_file():
    doc = yaml.safe_load((DEPLOY / "aws" / "cluster.yaml").read_text())
    assert doc["provider"]["type"] == "aws" and doc["provider"]["region"]
    assert doc["docker"]["image"] == _readme_image()
    assert doc["head_node_type"] in doc["available_node_types"]
    assert any("ray start --head" in c and "--dashboard-host=127.0.0.1" in c
               for c in doc["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c
               for c in doc["worker_start_ray_commands"])
    options = " ".join(doc["docker"]["run_options"])
    assert "VIDABLATE_STORAGE_PATH=" in options and "MLFLOW_TRACKING_URI=" in options
    assert doc["max_workers"] >= max(t.get("max_workers", 0)
                                     for t in doc["available_node_types"].values())


def test_slurm_recipe():
    path = DEPLOY / "slurm" / "ablate.sbatch"
    text = path.read_text()
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    directives = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", text, re.M))
    assert {"nodes", "ntasks-per-node", "cpus-per-task", "time", "signal"} <= set(directives)
    assert directives["signal"].startswith("B:TERM@")  # the graceful stop, resumed by a re-run
    assert "ray start --head" in text and 'ray start --address="$head_ip:$port"' in text
    assert 'vidablate ablate space="$SPACE" storage_path="$VIDABLATE_STORAGE_PATH"' in text


def test_the_command_passes_the_command_line_checks():
    argv = shlex.split(_readme_command().replace("$VIDABLATE_STORAGE_PATH",
                                                 "s3://bucket/ablations"))
    assert argv[:2] == ["vidablate", "ablate"]
    check_overrides(argv[2:])  # raises ConfigError on an unknown key or space
