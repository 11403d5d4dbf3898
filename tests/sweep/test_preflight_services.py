"""The pre-flight checks of object storage (``s3://`` storage_path and cache_path) and of a
database tracking store, against the real services (moto's S3 server, PostgreSQL): each fault
gives one ``ConfigError`` naming the setting and the fix, in seconds, never with the secret."""

from __future__ import annotations

import importlib.util
import socket
import time
import uuid

import pytest

from tests.services import ALLOW_S3, DENY_PUT, free_port
from vidablate.errors import ConfigError
from vidablate.sweep.preflight import check_object_store, check_storage, check_tracking
from vidablate.sweep.runner import SweepSettings, run_sweep

BOUND_S = 15.0
"""The most a check may take, even against an endpoint that never answers."""


def _timed(check, *args) -> tuple[ConfigError | None, float]:
    """The check's error (None when it passes) and how long it took."""
    start = time.monotonic()
    try:
        check(*args)
    except ConfigError as err:
        return err, time.monotonic() - start
    return None, time.monotonic() - start


@pytest.fixture(scope="module")
def iam_keys(s3_server) -> dict[str, tuple[str, str]]:
    """Two IAM users of the moto server (made while it checks no credentials): ``writer``
    may do anything in S3, ``reader`` everything but PutObject."""
    keys = {}
    for role, extra in (("writer", []), ("reader", [DENY_PUT])):
        _, key_id, secret = s3_server.user([ALLOW_S3, *extra])
        keys[role] = (key_id, secret)
    return keys


def _no_probe_left(s3_server, bucket: str) -> None:
    assert not [k for k in s3_server.keys(bucket) if ".vidablate-preflight" in k]


def test_writable_bucket_passes_and_leaves_no_probe(s3_server, aws):
    bucket = s3_server.bucket(f"pf-good-{uuid.uuid4().hex[:8]}")
    err, took = _timed(check_storage, f"s3://{bucket}/sweeps/team")
    assert err is None and took < 5, (err, took)
    # the probe is gone; pyarrow keeps the prefix's own folder marker (Ray makes it anyway)
    assert set(s3_server.keys(bucket)) <= {"sweeps/team/"}
    err, took = _timed(check_object_store, f"s3://{bucket}", "cache_path")  # the bucket root
    assert err is None and took < 5, (err, took)
    assert set(s3_server.keys(bucket)) <= {"sweeps/team/"}


def test_endpoint_with_nothing_listening_names_the_variable(s3_server, aws, monkeypatch):
    bucket = s3_server.bucket(f"pf-port-{uuid.uuid4().hex[:8]}")
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    err, took = _timed(check_storage, f"s3://{bucket}/sweeps")
    assert err is not None and took < BOUND_S, took
    text = str(err)
    assert text.startswith(f"storage_path='s3://{bucket}/sweeps': the S3 endpoint {endpoint} "
                           f"does not answer"), text
    assert "set AWS_ENDPOINT_URL to the object store's URL" in text and "\n" not in text
    assert aws["AWS_SECRET_ACCESS_KEY"] not in text
    # an endpoint in the URI itself is named as such; the URI's secret key is never printed
    err, _ = _timed(check_object_store, f"s3://AKIDX:uri-s3cret@{bucket}/f?scheme=http&"
                                        f"endpoint_override=127.0.0.1:{free_port()}",
                    "cache_path")
    assert err is not None and "uri-s3cret" not in str(err), err
    assert str(err).startswith(f"cache_path='s3://AKIDX:***@{bucket}/f?"), err
    assert "set endpoint_override in cache_path" in str(err)


def test_endpoint_that_never_answers_fails_within_the_bound(s3_server, aws, monkeypatch):
    with socket.socket() as silent:  # takes connections (the kernel does), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        err, took = _timed(check_storage, "s3://pf-silent/sweeps")
    assert err is not None and took < BOUND_S, took
    assert f"the S3 endpoint {endpoint} does not answer" in str(err), err
    assert "Timeout" in str(err) or "timed out" in str(err).lower(), err


def test_missing_bucket_says_create_it(s3_server, aws):
    bucket = f"pf-missing-{uuid.uuid4().hex[:8]}"
    err, took = _timed(check_storage, f"s3://{bucket}/sweeps")
    assert err is not None and took < BOUND_S, took
    assert (f"bucket {bucket!r} at {s3_server.endpoint} does not exist" in str(err)
            and f"create it (aws s3 mb s3://{bucket})" in str(err)), err
    assert aws["AWS_SECRET_ACCESS_KEY"] not in str(err)


def test_refused_credentials_name_the_variable_never_the_secret(s3_server, aws, iam_keys,
                                                                monkeypatch):
    bucket = s3_server.bucket(f"pf-auth-{uuid.uuid4().hex[:8]}")
    key_id, secret = iam_keys["writer"]
    with s3_server.checking():
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        good, _ = _timed(check_storage, f"s3://{bucket}/sweeps")  # a real key pair passes
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-" + secret[:4])
        wrong_secret, took_secret = _timed(check_storage, f"s3://{bucket}/sweeps")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000000")
        unknown_key, took_key = _timed(check_object_store, f"s3://{bucket}/cache", "cache_path")
    assert good is None, good
    assert wrong_secret is not None and took_secret < BOUND_S
    assert ("AWS_SECRET_ACCESS_KEY is not the secret of the key in AWS_ACCESS_KEY_ID"
            in str(wrong_secret)), wrong_secret
    assert unknown_key is not None and took_key < BOUND_S
    assert str(unknown_key).startswith(f"cache_path='s3://{bucket}/cache': bucket {bucket!r} "
                                       f"at {s3_server.endpoint} does not know the access key "
                                       f"in AWS_ACCESS_KEY_ID"), unknown_key
    for err in (wrong_secret, unknown_key):
        assert secret not in str(err) and "not-the-secret" not in str(err), err
    _no_probe_left(s3_server, bucket)


def test_bucket_that_denies_writes(s3_server, aws, iam_keys, monkeypatch):
    """moto enforces the user's IAM policy (a Deny of s3:PutObject), not bucket policies."""
    bucket = s3_server.bucket(f"pf-ro-{uuid.uuid4().hex[:8]}")
    key_id, secret = iam_keys["reader"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with s3_server.checking():
        err, took = _timed(check_storage, f"s3://{bucket}/sweeps")
    assert err is not None and took < BOUND_S, took
    assert (f"bucket {bucket!r} at {s3_server.endpoint} denies writes under 'sweeps'"
            in str(err) and f"grant s3:PutObject and s3:DeleteObject on arn:aws:s3:::{bucket}"
            f"/sweeps/*" in str(err)), err
    assert secret not in str(err)
    assert s3_server.keys(bucket) == []


def test_cache_path_in_s3_is_checked_before_the_sweep_starts(s3_server, aws, tmp_path):
    bucket = f"pf-nocache-{uuid.uuid4().hex[:8]}"
    settings = SweepSettings(storage_path=str(tmp_path / "ray_results"),
                             tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                             cache_path=f"s3://{bucket}/features")
    with pytest.raises(ConfigError, match=rf"^cache_path='s3://{bucket}/features': bucket "
                                          rf"'{bucket}' .* does not exist"):
        run_sweep("isclip_modules", settings=settings)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_good_postgres_database_passes(postgres):
    uri = postgres.database(f"pf_good_{uuid.uuid4().hex[:8]}")
    for store in (uri, uri.replace("postgresql://", "postgresql+psycopg://")):
        err, took = _timed(check_tracking, store)
        assert err is None and took < 5, (store, err, took)


def test_postgres_wrong_port_names_tracking_uri_without_the_password():
    port = free_port()
    err, took = _timed(check_tracking, f"postgresql://vidablate:hunter2@127.0.0.1:{port}/mlflow")
    assert err is not None and took < BOUND_S, took
    assert str(err).startswith(f"tracking_uri=postgresql://vidablate:***@127.0.0.1:{port}/mlflow"
                               f": the database server at 127.0.0.1:{port} does not answer"), err
    assert "hunter2" not in str(err) and "start it or fix the host and port" in str(err)


def test_postgres_missing_database_and_unknown_user(postgres):
    err, took = _timed(check_tracking, f"postgresql://vidablate@127.0.0.1:{postgres.port}/nosuch")
    assert err is not None and took < BOUND_S, took
    assert ("database 'nosuch' does not exist on 127.0.0.1:" in str(err)
            and f"createdb -h 127.0.0.1 -p {postgres.port} -U vidablate nosuch" in str(err)), err
    # trust auth: a password is never asked, so a refusal is an unknown role here
    uri = postgres.database(f"pf_role_{uuid.uuid4().hex[:8]}").replace("vidablate@",
                                                                       "stranger:pw9@")
    err, took = _timed(check_tracking, uri)
    assert err is not None and took < BOUND_S, took
    assert "refused user 'stranger'" in str(err) and "pw9" not in str(err), err


def test_postgres_that_never_answers_fails_within_the_bound():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        err, took = _timed(check_tracking, f"postgresql://u@127.0.0.1:{port}/db")
    assert err is not None and took < BOUND_S, took
    assert "does not answer" in str(err) and "timeout" in str(err), err


@pytest.mark.skipif(importlib.util.find_spec("MySQLdb") is not None,
                    reason="mysqlclient is installed: no missing driver to report")
def test_missing_database_driver_says_what_to_install():
    err, _ = _timed(check_tracking, "mysql://root:pw@127.0.0.1:3306/mlflow")
    assert err is not None
    assert str(err).startswith("tracking_uri=mysql://root:***@127.0.0.1:3306/mlflow: no "
                               "database driver for mysql:// is installed"), err
    assert "pip install mysqlclient" in str(err)
