"""Shared fixtures. Ray tests start their own local cluster (never attach to a running one)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A tiny budget for tests that actually train: 2 train clips per class, 1 test clip per class,
# one seed (the tables' default is 3).
TINY = [
    "trainer.epochs=1", "data.train_per_class=2", "data.test_per_class=1", "trainer.batch_size=8",
    "seeds=[0]",
]


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only contend on the 2 shared CI cores (much slower).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyModels:
    """Builds vidablate-tiny VideoCLIPs from model toggles (``ModelConfig`` fields).

    ``tiny_model(**toggles)`` returns a fresh model built after ``torch.manual_seed(seed)``
    (default 0): safe to mutate. ``tiny_model.shared(**toggles)`` returns one built once per
    session and configuration with seed 0, put in training (or, ``train=False``, eval) mode and
    with its gradients cleared on every call; tests must not change its weights."""

    def __init__(self) -> None:
        self._shared: dict[str, object] = {}

    def __call__(self, seed: int = 0, num_frames: int = 4, **toggles):
        import torch

        from vidablate.config import model_config_class
        from vidablate.model import build_model

        torch.manual_seed(seed)
        return build_model(model_config_class()(**toggles), num_frames=num_frames)

    def shared(self, num_frames: int = 4, train: bool = True, **toggles):
        from vidablate.config import model_config_class

        key = repr((num_frames, model_config_class()(**toggles)))
        if key not in self._shared:
            self._shared[key] = self(num_frames=num_frames, **toggles)
        model = self._shared[key].train(train)
        model.zero_grad(set_to_none=True)
        return model


@pytest.fixture(scope="session")
def tiny_model() -> TinyModels:
    """The one tiny-model builder of the test suite (see ``TinyModels``)."""
    return TinyModels()


EXPORT_SPEC = dict(num_classes=4, train_per_class=2, test_per_class=2, num_frames=8)
"""The synthetic set ``exported_synthetic`` writes: 4 classes x 2 clips of 8 frames at 32x32."""


@pytest.fixture(scope="session")
def exported_synthetic(tmp_path_factory):
    """The synthetic set exported once as mp4 + IMU csv + manifests: (folder, paths)."""
    from vidablate.data.converters import export_synthetic
    from vidablate.data.synthetic import SyntheticSpec

    out = tmp_path_factory.mktemp("synthetic")
    return out, export_synthetic(out, SyntheticSpec(**EXPORT_SPEC))


@pytest.fixture(scope="session")
def placeholder_data(tmp_path_factory):
    """$VIDABLATE_DATA with a one-row manifest and a class-name file for every path the
    dataset presets name, so spaces whose rows name real datasets pass the dry run (which
    checks that files exist; their content is checked by the pre-flight of a real run)."""
    import os

    import yaml

    from vidablate.data.manifest import write_class_names, write_manifest

    root = tmp_path_factory.mktemp("data")
    old = os.environ.get("VIDABLATE_DATA")
    os.environ["VIDABLATE_DATA"] = str(root)
    for preset in sorted((REPO / "platform" / "vidablate" / "conf" / "data").glob("*.yaml")):
        raw = yaml.safe_load(preset.read_text())
        n = raw.get("num_classes", 2)
        paths = [raw.get(k) for k in ("train_manifest", "test_manifest")]
        paths += raw.get("cross_manifests") or []
        for key in ("class_names_file", "cross_class_names_file"):
            if raw.get(key):
                name = raw[key].replace("${oc.env:VIDABLATE_DATA,data}", str(root))
                count = 51 if "hmdb51" in name else 101 if "ucf101" in name else n
                write_class_names([f"class {i}" for i in range(count)], name)
        for path in filter(None, paths):
            write_manifest([{"video": "a.mp4", "label": 0, "label_name": "class 0"}],
                           path.replace("${oc.env:VIDABLATE_DATA,data}", str(root)))
    yield root
    if old is None:
        os.environ.pop("VIDABLATE_DATA")
    else:
        os.environ["VIDABLATE_DATA"] = old


@pytest.fixture(scope="session")
def ray_local():
    """A private local Ray cluster with 2 CPUs for this test session."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "platform")}})
    yield ray
    ray.shutdown()


@pytest.fixture
def ablate_cmd():
    """The CLI as users run it."""
    return [sys.executable, str(REPO / "jobs" / "ablate.py")]


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(size)``: a new folder under tmp_path with a tmpfs of ``size`` ("2m")
    mounted on it, unmounted after the test. Skips where mounting is not permitted."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command: these tests need a size-limited tmpfs")
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, text=True)
        if res.returncode:
            why = res.stderr.strip()
            if os.geteuid() != 0 or re.search(r"permission|superuser|not permitted", why,
                                               re.IGNORECASE):
                pytest.skip(f"mounting a {size} tmpfs needs root (CAP_SYS_ADMIN): {why}")
            pytest.fail(f"mount -t tmpfs -o size={size} failed: {why}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 for the session (``services.S3Server``): ``.env`` holds
    the AWS variables a client needs, ``.bucket(name)`` makes a bucket."""
    from tests.services import S3Server

    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server on 127.0.0.1 for the session (``services.Postgres``);
    ``.database(name)`` makes a database and returns its URI."""
    from tests.services import Postgres

    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not on PATH")
    server = Postgres().start()
    yield server
    server.remove()


@pytest.fixture
def mlflow_server(tmp_path, s3_server, postgres):
    """``mlflow_server(name)``: an MLflow tracking server on a new PostgreSQL database with
    artifacts in a new bucket of the S3 server, stopped after the test."""
    from tests.services import MlflowServer

    servers: list = []

    def start(name: str):
        server = MlflowServer(postgres.database(name), f"s3://{s3_server.bucket(name)}/mlflow",
                              s3_server.env, tmp_path).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def aws(s3_server, monkeypatch) -> dict[str, str]:
    """The moto server's AWS variables, and nothing else of the machine's AWS setup."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.env
