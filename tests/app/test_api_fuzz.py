"""The whole HTTP API under schemathesis, as operator and as admin (issue 10 #12).

Every operation of ``/openapi.json`` gets generated valid and invalid requests (NUL characters,
nan, huge numbers, deep nesting, wrong types, ...) against one real instance. Required: no 5xx,
and every answer (status code, content type, headers, body) is one the document describes. Chaos
runs disabled (403 ``chaos_disabled``). Bounded: a fixed number of examples per operation,
derandomized so that a failure reproduces; ``HYDROVISOR_FUZZ_EXAMPLES`` raises it for a longer hunt.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import msgspec
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hydrovisor.app import Hydrovisor
from hydrovisor.http.openapi import DOCUMENT
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.store.embedded_pg import EmbeddedPostgres
from tests.app.conftest import settings_for
from tests.conftest import _admin, _with_database
from tests.helpers import http, wait_until

OPERATOR = "operator-token-0123456789"
ADMIN = "admin-token-0123456789abc"
TOKENS = {"operator": OPERATOR, "admin": ADMIN}
EXAMPLES = int(os.environ.get("HYDROVISOR_FUZZ_EXAMPLES", "40"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]

schema = schemathesis.openapi.from_dict(msgspec.json.decode(msgspec.json.encode(DOCUMENT)))
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES,
                                deterministic=True, database="none", allow_x00=True)


@pytest.fixture(scope="module")
def api(pg_server: EmbeddedPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One instance for every generated request: tokens for both roles, chaos disabled."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(pg_server.dsn, f'CREATE DATABASE "{name}"'))
    app = Hydrovisor(settings_for(_with_database(pg_server.dsn, name), tmp_path_factory.mktemp("fuzz") / "data",
                                  api_token=OPERATOR, admin_token=ADMIN))
    with LoopThread() as loop:
        loop.run(app.start())
        base_url = f"http://127.0.0.1:{app.http_port}"
        try:
            wait_until(lambda: http("GET", base_url + "/health/ready").status == 200, 15)
            yield base_url
        finally:
            loop.run(app.stop())
    asyncio.run(_admin(pg_server.dsn, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as shared:
        yield shared


@pytest.mark.slow
@pytest.mark.parametrize("role", ["operator", "admin"])
@schema.parametrize()
def test_no_server_errors_and_answers_match_the_document(
    case: schemathesis.Case, role: str, api: str, session: requests.Session
) -> None:
    case.call_and_validate(base_url=api, session=session, headers={"Authorization": f"Bearer {TOKENS[role]}"},
                           checks=CHECKS, timeout=30)


def test_the_document_is_what_the_server_serves(api: str) -> None:
    assert http("GET", api + "/openapi.json").json() == msgspec.json.decode(msgspec.json.encode(DOCUMENT))

