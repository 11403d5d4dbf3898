"""Pre-flight checks of a sweep, before anything starts: every trial can be scheduled on the
cluster, the storage (and an ``s3://`` cache) is writable, the tracking store (a server or a
database) answers, a GPU exists where a trial asks for one, and the saved Tune state of a
resumed sweep can be read. Each check that goes over the network is bounded to seconds."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs
import torch
from ray import tune

from ..errors import ConfigError
from .caching import trial_resources
from .space import TrialSpec


class RayTarget(Protocol):
    """What ``check_local_gpu`` reads of the sweep settings (``runner.SweepSettings``)."""

    @property
    def ray_address(self) -> str | None:
        """None: $RAY_ADDRESS if set, else a new local cluster."""


def check_resources(trials: list[TrialSpec], resources: dict[str, float],
                    packed: dict[str, bool] | None = None) -> None:
    """Fail before launch when no trial could ever be scheduled on this cluster."""
    for t in trials:
        tr = t.experiment["trainer"]
        workers = max(tr["num_workers"], 1)
        need = trial_resources(tr, (packed or {}).get(t.key, False))
        if tr["use_gpu"] and resources.get("GPU", 0) < need["GPU"]:
            raise ConfigError(
                f"trial {t.key}: trainer.use_gpu=true with trainer.num_workers={workers} needs "
                f"{need['GPU']:g} GPU(s); the Ray cluster has {resources.get('GPU', 0):g}")
        if resources.get("CPU", 0) < need["CPU"]:
            raise ConfigError(
                f"trial {t.key}: trainer.num_workers={workers} x trainer.cpus_per_worker="
                f"{tr['cpus_per_worker']} needs {need['CPU']:g} CPUs; the Ray cluster has "
                f"{resources.get('CPU', 0):g}")


def check_storage(storage: str) -> None:
    """The sweep's storage must be writable: a local folder (checked without creating anything)
    or a cloud URI (``check_object_store``)."""
    if "://" in storage:
        check_object_store(storage, "storage_path")
        return
    path = Path(storage)
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"storage_path={storage!r} is not writable ({existing} is "
                          f"{'not a folder' if not existing.is_dir() else 'read-only'}); pass "
                          f"storage_path=<a writable folder, shared by all nodes, or a cloud URI>")


S3_CONNECT_TIMEOUT_S = 3.0
S3_REQUEST_TIMEOUT_S = 4.0
S3_ATTEMPTS = 2
"""The probe's bounds: a silent endpoint fails after about attempts x request timeout (~9 s)."""


def check_object_store(uri: str, setting: str) -> None:
    """A cloud URI given as ``setting`` (``storage_path``, ``cache_path``) must name a filesystem
    pyarrow knows; an ``s3://`` one must also take a small object under its prefix (written,
    then deleted), with short timeouts so that a wrong endpoint, refused credentials, a missing
    bucket or a read-only one fail in seconds with the AWS variable to fix, never the secret."""
    target = _S3Target.of(uri, setting) if uri.startswith("s3://") else None
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)  # as Ray opens it (and finds the region)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several kinds
        if target is not None and isinstance(err, OSError):
            raise target.error(str(err)) from None
        raise ConfigError(f"{setting}={_redact(uri)!r}: {type(err).__name__}: {err}") from None
    if target is None or not isinstance(fs, pyarrow.fs.S3FileSystem):
        return
    _, (options,) = fs.__reduce__()  # the options from_uri resolved, with short timeouts
    target.hidden += [v for v in (options.get("secret_key"), options.get("session_token")) if v]
    probe_fs = pyarrow.fs.S3FileSystem(**{
        **options, "connect_timeout": S3_CONNECT_TIMEOUT_S,
        "request_timeout": S3_REQUEST_TIMEOUT_S,
        "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS)})
    probe = f"{path.rstrip('/')}/.vidablate-preflight-{secrets.token_hex(6)}"
    try:
        with probe_fs.open_output_stream(probe) as out:
            out.write(b"vidablate pre-flight probe; safe to delete\n")
    except OSError as err:
        denied = "AWS Error ACCESS_DENIED" in str(err)  # then: may it read (look) at all?
        raise target.error(str(err), readable=denied and _readable(probe_fs, target.bucket)
                           ) from None
    try:
        probe_fs.delete_file(probe)
    except OSError as err:
        raise target.fail(
            f"wrote s3://{probe} but cannot delete it ({target.detail(str(err))}); grant "
            f"s3:DeleteObject on the prefix to the key in AWS_ACCESS_KEY_ID (Ray deletes old "
            f"checkpoints) and delete that object") from None


def _readable(fs: pyarrow.fs.S3FileSystem, bucket: str) -> bool:
    """Whether the bucket can be looked at (a write denied then is a write permission)."""
    try:
        return fs.get_file_info(bucket).type == pyarrow.fs.FileType.Directory
    except OSError:
        return False


@dataclass
class _S3Target:
    """An ``s3://`` URI being checked: the setting, bucket and prefix, which endpoint is used
    and where it was set, and the secrets no message may contain."""

    setting: str
    uri: str
    bucket: str
    prefix: str
    endpoint: str
    endpoint_var: str
    hidden: list[str]

    @classmethod
    def of(cls, uri: str, setting: str) -> _S3Target:
        """Read from the URI and the environment as pyarrow does (the URI's endpoint_override,
        then $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL, else AWS itself)."""
        parts = urllib.parse.urlsplit(uri)
        query = urllib.parse.parse_qs(parts.query)
        bucket = parts.netloc.rpartition("@")[2]
        if query.get("endpoint_override"):
            endpoint, var = query["endpoint_override"][0], f"endpoint_override in {setting}"
            if "://" not in endpoint:
                endpoint = f"{query.get('scheme', ['https'])[0]}://{endpoint}"
        elif os.environ.get("AWS_ENDPOINT_URL_S3"):
            endpoint, var = os.environ["AWS_ENDPOINT_URL_S3"], "AWS_ENDPOINT_URL_S3"
        elif os.environ.get("AWS_ENDPOINT_URL"):
            endpoint, var = os.environ["AWS_ENDPOINT_URL"], "AWS_ENDPOINT_URL"
        else:
            endpoint, var = "AWS S3 (AWS_ENDPOINT_URL is not set)", "AWS_ENDPOINT_URL"
        hidden = [os.environ.get(k, "") for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")]
        hidden.append(urllib.parse.unquote(parts.password or ""))
        return cls(setting, uri, bucket, parts.path.strip("/"), _redact(endpoint), var,
                   [h for h in hidden if h])

    def fail(self, reason: str) -> ConfigError:
        """One line: the setting (its URI without a password), then what failed and the fix."""
        text = f"{self.setting}={_redact(self.uri)!r}: {reason}"
        # a guard, pyarrow prints no secret; a short one is skipped (it would garble words)
        for secret in (s for s in self.hidden if len(s) >= 8):
            text = text.replace(secret, "***")
        return ConfigError(text)

    def detail(self, text: str) -> str:
        """pyarrow's error without its context and request id: ``CODE during Op: message``."""
        text = text.partition("AWS Error ")[2] or text
        text = re.sub(r"\s*\(Request ID:[^)]*\)", "", " ".join(text.split()))
        return text[:240]

    def error(self, text: str, readable: bool = False) -> ConfigError:
        """The advice for an S3 error of the probe (or of pyarrow finding the bucket's region);
        ``readable``: a denied write is a missing write permission, not bad credentials."""
        found = re.search(r"AWS Error (\w+)", text)
        code = found[1] if found else ""
        detail, where = self.detail(text), f"bucket {self.bucket!r} at {self.endpoint}"
        keys = ("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" + (
            "" if os.environ.get("AWS_ACCESS_KEY_ID") or "@" in self.uri.split("/")[2]
            else " (AWS_ACCESS_KEY_ID is not set)"))
        if code in ("NETWORK_CONNECTION", "REQUEST_TIMEOUT") or "curlCode" in text:
            return self.fail(f"the S3 endpoint {self.endpoint} does not answer ({detail}); set "
                             f"{self.endpoint_var} to the object store's URL (http(s)://host:port)"
                             f" or start the store")
        if code == "INVALID_ACCESS_KEY_ID":
            return self.fail(f"{where} does not know the access key in AWS_ACCESS_KEY_ID "
                             f"({detail}); set {keys} to a key pair of that store")
        if code in ("SIGNATURE_DOES_NOT_MATCH", "INVALID_SIGNATURE", "INCOMPLETE_SIGNATURE"):
            return self.fail(f"{where} rejects the signature: AWS_SECRET_ACCESS_KEY is not the "
                             f"secret of the key in AWS_ACCESS_KEY_ID ({detail}); fix "
                             f"AWS_SECRET_ACCESS_KEY")
        if code in ("INVALID_CLIENT_TOKEN_ID", "REQUEST_EXPIRED") or "ExpiredToken" in text:
            return self.fail(f"{where} refuses the session credentials ({detail}); renew "
                             f"AWS_SESSION_TOKEN with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if code == "REQUEST_TIME_TOO_SKEWED":
            return self.fail(f"{where} refuses the request: this machine's clock is off "
                             f"({detail}); set the clock (NTP)")
        if code in ("NO_SUCH_BUCKET", "RESOURCE_NOT_FOUND"):
            return self.fail(f"{where} does not exist ({detail}); create it (aws s3 mb "
                             f"s3://{self.bucket}) or fix the bucket in {self.setting}, or "
                             f"{self.endpoint_var} if that is not the right store")
        if "HTTP status 301" in text or "PermanentRedirect" in text or "region" in detail.lower():
            return self.fail(f"{where} is in another region ({detail}); set AWS_DEFAULT_REGION "
                             f"to the bucket's region")
        if code == "ACCESS_DENIED" and readable:
            return self.fail(f"{where} denies writes under {self.prefix or '/'!r} ({detail}); "
                             f"grant s3:PutObject and s3:DeleteObject on "
                             f"arn:aws:s3:::{self.bucket}/{self.prefix + '/' if self.prefix else ''}"
                             f"* to the key in AWS_ACCESS_KEY_ID, or pick a writable "
                             f"{self.setting}")
        if code == "ACCESS_DENIED":
            return self.fail(f"access to {where} is denied ({detail}); set {keys} to "
                             f"credentials that may list and write that bucket")
        return self.fail(f"{where}: {detail}; check {self.endpoint_var}, {keys} and "
                         f"AWS_DEFAULT_REGION")


def check_tracking(uri: str) -> None:
    """A tracking server must answer its health check, a database store (PostgreSQL, MySQL) a
    ``SELECT 1``; a sqlite store's folder must exist."""
    if uri.startswith(("http://", "https://")):
        url, headers = _health_request(uri)
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=10) as reply:
                reply.read(64)
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise ConfigError(
                    f"tracking_uri={_redact(uri)}: the MLflow server refused the credentials "
                    f"(HTTP {err.code}); give them in the URI (http://user:password@host:port) "
                    f"or in $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD") from None
            raise ConfigError(f"tracking_uri={_redact(uri)}: the MLflow server's health check "
                              f"answered HTTP {err.code}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise ConfigError(
                f"tracking_uri={_redact(uri)}: the MLflow server does not answer ({reason}); "
                f"start it (mlflow server --host 127.0.0.1 --port 5000) or pass "
                f"tracking_uri=sqlite:///$PWD/mlflow.db") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"tracking_uri={uri}: {folder} is not a writable folder")
    elif re.match(r"(postgresql|mysql)(\+\w+)?://", uri):
        check_database(uri)


DB_CONNECT_TIMEOUT_S = 5
_TIMEOUT_ARG = {"psycopg": "connect_timeout", "psycopg2": "connect_timeout",
                "mysqldb": "connect_timeout", "pymysql": "connect_timeout", "pg8000": "timeout"}
"""The connect-timeout argument of each database driver SQLAlchemy may load."""
_DEFAULT_PORT = {"postgresql": 5432, "mysql": 3306}
_DRIVER_PACKAGE = {"psycopg": ("'psycopg[binary]'", "postgresql+psycopg2://"),
                   "psycopg2": ("psycopg2-binary", "postgresql+psycopg://"),
                   "MySQLdb": ("mysqlclient", "mysql+pymysql://"),
                   "pymysql": ("pymysql", "mysql+mysqldb://")}
"""A missing driver module: the package to install, and the URI prefix of another driver."""


def check_database(uri: str) -> None:
    """A database tracking store (MLflow opens it with SQLAlchemy) must accept a connection and
    answer ``SELECT 1`` within seconds: an unreachable server, refused credentials, a missing
    database or a missing driver each fail with ``tracking_uri`` (no password) and the fix."""
    # SQLAlchemy (MLflow's dependency) is loaded only for a database store: it is slow to load
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    shown = f"tracking_uri={_redact(uri)}"
    try:
        url = sqlalchemy.engine.make_url(uri)
        dialect = url.get_dialect()
        arg = _TIMEOUT_ARG.get(dialect.driver)
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=(
            {arg: DB_CONNECT_TIMEOUT_S} if arg else {}))
    except ImportError as err:  # the dialect's driver is not installed
        package, other = _DRIVER_PACKAGE.get(err.name or "", (err.name, "<dialect>+<driver>://"))
        raise ConfigError(
            f"{shown}: no database driver for {uri.split('://')[0]}:// is installed ({err}); "
            f"pip install {package}, or name another installed driver in the URI "
            f"({other}...)") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as err:  # a malformed URI or port
        raise ConfigError(f"{shown}: {type(err).__name__}: "
                          f"{str(err).replace(uri, _redact(uri))}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.DBAPIError as err:
        raise ConfigError(f"{shown}: {_database_reason(url, str(err.orig))}") from None
    finally:
        engine.dispose()


def _database_reason(url: Any, message: str) -> str:
    """What a driver's connection error means (libpq's and MySQL's wording) and the fix."""
    detail = " ".join(message.split())[:300]
    if url.password:
        detail = detail.replace(str(url.password), "***")
    backend = url.get_backend_name()
    server = f"{url.host or 'localhost'}:{url.port or _DEFAULT_PORT.get(backend, '')}"
    if re.search(r'database "[^"]*" does not exist|Unknown database', detail):
        create = (f"createdb -h {url.host} -p {url.port} -U {url.username} {url.database}"
                  if backend == "postgresql" else f"CREATE DATABASE {url.database}")
        return (f"database {url.database!r} does not exist on {server} ({detail}); create it "
                f"({create}) or fix the database name in tracking_uri")
    if re.search(r'password authentication failed|role "[^"]*" does not exist|pg_hba\.conf|'
                 r"Access denied for user|authentication", detail, re.IGNORECASE):
        return (f"the database server at {server} refused user {url.username!r} ({detail}); fix "
                f"the user and password in tracking_uri ({backend}://user:password@host:port/db)"
                + (" or $PGPASSWORD / ~/.pgpass" if backend == "postgresql" else ""))
    if re.search(r"refused|timeout|timed out|resolve host|translate host|Can't connect|"
                 r"Unknown MySQL server host|No route|unreachable", detail, re.IGNORECASE):
        return (f"the database server at {server} does not answer ({detail}); start it or fix "
                f"the host and port in tracking_uri")
    return f"cannot connect to the database at {server} ({detail})"


def _health_request(uri: str) -> tuple[str, dict[str, str]]:
    """The server's ``/health`` URL without the URI's ``user:password@`` part, and the
    credentials as the header MLflow's client sends: basic auth from the URI or
    $MLFLOW_TRACKING_USERNAME / _PASSWORD, else a bearer $MLFLOW_TRACKING_TOKEN."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health",
                                   "", ""))
    user = urllib.parse.unquote(parts.username or "") or os.environ.get(
        "MLFLOW_TRACKING_USERNAME", "")
    password = urllib.parse.unquote(parts.password or "") or os.environ.get(
        "MLFLOW_TRACKING_PASSWORD", "")
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return url, {"Authorization": f"Basic {token}"}
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return url, {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    return url, {}


def _redact(uri: str) -> str:
    """A URI without the password part of ``user:password@host`` (never print credentials)."""
    return re.sub(r"//([^/:@]+):[^/@]*@", r"//\1:***@", uri)


def check_local_gpu(trials: list[TrialSpec], settings: RayTarget) -> None:
    """A new local cluster has the GPUs this machine has: fail before starting Ray when a
    trial asks for one and there is none (a remote cluster is checked once connected)."""
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or "local"
    gpu = [t.key for t in trials if t.experiment["trainer"]["use_gpu"]]
    if address == "local" and gpu:
        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.use_gpu=true (trial {gpu[0]}) but this machine has no "
                              f"CUDA GPU; set trainer.use_gpu=false or ray_address=<a cluster "
                              f"with GPUs>")


def check_tune_state(exp_path: str) -> bool:
    """Whether an earlier run of this sweep saved a Tune state to restore; a state that cannot
    be read fails now with the way forward (Tune would log it and silently start over)."""
    try:
        if not tune.Tuner.can_restore(exp_path):
            return False
        _read_tune_state(exp_path)
    except Exception as err:  # noqa: BLE001 - a damaged state file fails in many ways
        raise tune_state_error(exp_path, err) from None
    return True


def tune_state_error(exp_path: str, err: Exception) -> ConfigError:
    """The advice when the saved Tune state of a sweep cannot be read or restored."""
    return ConfigError(
        f"the saved Tune state of this sweep in {exp_path} cannot be read "
        f"({type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}). "
        f"The trials' checkpoints and MLflow runs are intact: re-run the same command with "
        f"resume=false to start the Tune experiment afresh. Finished trials then report "
        f"their final result from their last checkpoint without training again, unfinished "
        f"ones continue from theirs, and the MLflow runs are reused.")


def _read_tune_state(exp_path: str) -> dict[str, Any]:
    """Parse the newest ``experiment_state-*.json`` of a Tune experiment (local or URI)."""
    fs, root = pyarrow.fs.FileSystem.from_uri(exp_path) if "://" in exp_path else (
        pyarrow.fs.LocalFileSystem(), exp_path)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root))
    states = sorted(i.path for i in infos
                    if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    if not states:
        raise ValueError(f"no experiment_state-*.json in {exp_path}")
    with fs.open_input_stream(states[-1]) as f:
        return json.loads(f.read().decode())
