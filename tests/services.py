"""The real services a cluster uses, started by tests on 127.0.0.1: an S3-compatible object store
(moto's standalone server), PostgreSQL (the image's ``initdb``/``pg_ctl``) and an MLflow tracking
server on PostgreSQL with its artifacts in the bucket. Each is a process the test can stop and
start again (an outage), and is stopped when the test session ends."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200, or fail with the service's log tail."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s\n{tail}")


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class S3Server:
    """moto's standalone S3 server; ``env`` is what a client needs (the standard AWS
    variables, which pyarrow, boto3 and MLflow read)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = folder / "moto.log"
        self.proc: subprocess.Popen | None = None
        self._admin: tuple[str, str] | None = None
        self.env = {"AWS_ACCESS_KEY_ID": "vidablate-test", "AWS_SECRET_ACCESS_KEY": "secret-key",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
                    "MLFLOW_S3_ENDPOINT_URL": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self) -> S3Server:
        self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                      str(self.port)], stdout=self.log.open("ab"),
                                     stderr=subprocess.STDOUT)
        wait_http(f"{self.endpoint}/moto-api/", 60, self.proc, self.log)
        return self

    def client(self):
        import boto3  # test-only dependency, loaded by the tests that use the bucket

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                         Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def _iam(self, key: tuple[str, str] = ("setup", "setup")):
        import boto3  # test-only dependency

        return boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=key[0], aws_secret_access_key=key[1])

    def user(self, statements: list[dict]) -> tuple[str, str, str]:
        """A new IAM user of the server with an inline policy of these statements; (user
        name, access key id, secret key). moto enforces it only while ``checking()``; call
        this before that block (it also makes the admin that ``policy`` uses within it)."""
        if self._admin is None:
            self._admin = ("", "")  # not None while the admin itself is made
            self._admin = self.user([{"Effect": "Allow", "Action": "*", "Resource": "*"}])[1:]
        iam = self._iam()
        name = f"user-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": statements}))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return name, key["AccessKeyId"], key["SecretAccessKey"]

    def policy(self, user: str, statements: list[dict]) -> None:
        """Replace the user's inline policy, as the admin (moto applies it to the next
        request, also within ``checking()``)."""
        self._iam(self._admin).put_user_policy(
            UserName=user, PolicyName="s3",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))

    @contextlib.contextmanager
    def checking(self) -> Iterator[None]:
        """moto accepts any key unless told otherwise: within the block it checks signatures
        and IAM policies of every request to the server."""
        def set_count(count: bytes) -> None:
            urllib.request.urlopen(urllib.request.Request(
                f"{self.endpoint}/moto-api/reset-auth", data=count, method="POST",
                headers={"Content-Type": "text/plain"}), timeout=10).read()

        set_count(b"0")
        try:
            yield
        finally:
            set_count(b"inf")

    def stop(self) -> None:
        _stop(self.proc)


ALLOW_S3 = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
DENY_PUT = {"Effect": "Deny", "Action": "s3:PutObject", "Resource": "*"}


class Postgres:
    """A PostgreSQL cluster in a temporary folder, on 127.0.0.1 with trust auth. ``initdb``
    refuses to run as root, so as root it runs as ``nobody``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="vidablate-pg-"))
        self.data = self.folder / "data"
        self.user = "vidablate"
        self._as = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "nobody", "nogroup")

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._as, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> Postgres:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                      "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1", "start")
        return self

    def database(self, name: str) -> str:
        """A new database; its SQLAlchemy URI."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on a PostgreSQL database with artifacts proxied to ``s3://...``;
    stop and start it again on the same port to make an outage."""

    def __init__(self, backend: str, artifacts: str, env: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend, self.artifacts, self.env = backend, artifacts, env
        self.log = folder / f"mlflow-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", self.backend,
               "--artifacts-destination", self.artifacts, "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env}, start_new_session=True)
        wait_http(f"{self.uri}/health", 120, self.proc, self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
