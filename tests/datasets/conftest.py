"""Fixtures of the dataset tests: a real S3 endpoint (moto's server on loopback) and a client for it."""
from __future__ import annotations

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def endpoint():
    """The URL of a moto S3 server for the module's tests (skipped without boto3 and moto)."""
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    from local_servers import moto_s3

    with moto_s3() as url:
        yield url


@pytest.fixture()
def s3(endpoint, monkeypatch):
    """A boto3 client of that server, with test credentials and no endpoint or profile from the environment."""
    import boto3

    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    return boto3.client("s3", endpoint_url=endpoint)
