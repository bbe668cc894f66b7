"""Bearer tokens, roles, and the loopback-only rule when no token is configured."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hydrovisor.config import Settings
from hydrovisor.http.auth import ROLE_KEY, Role, make_auth_middleware
from hydrovisor.http.errors import ApiError
from tests.app.conftest import Running
from tests.helpers import http

OPERATOR = "operator-token-0123456789"
ADMIN = "admin-token-0123456789abc"


@pytest.fixture
def secured(start_app: Callable[..., Running]) -> Running:
    return start_app(api_token=OPERATOR, admin_token=ADMIN)


def test_missing_and_wrong_tokens_get_401_with_a_challenge(secured: Running) -> None:
    url = secured.base_url + "/api/v1/actors"
    missing = http("GET", url)
    assert missing.status == 401
    assert missing.json()["code"] == "auth_required"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = http("GET", url, token="not-the-token-at-all")
    assert wrong.status == 401
    assert wrong.json()["code"] == "invalid_token"


def test_roles_operator_reads_admin_restarts(secured: Running) -> None:
    assert http("GET", secured.base_url + "/api/v1/actors", token=OPERATOR).status == 200
    url = secured.base_url + "/api/v1/actors/nodes/restart"
    denied = http("POST", url, token=OPERATOR)
    assert denied.status == 403
    assert denied.json()["code"] == "forbidden"
    assert http("POST", url, token=ADMIN).status == 202


def test_probes_metrics_and_openapi_need_no_token(secured: Running) -> None:
    for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json"):
        assert http("GET", secured.base_url + path).status == 200, path


async def _through(settings: Settings, peer: str) -> web.StreamResponse:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = (
        lambda key, default=None: (peer, 5555) if key == "peername" else default
    )
    request = make_mocked_request("GET", "/api/v1/actors", transport=transport)

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    return await make_auth_middleware(settings)(request, handler)


def test_without_a_token_only_loopback_clients_are_served() -> None:
    settings = Settings()
    assert asyncio.run(_through(settings, "127.0.0.1")).status == 200
    assert asyncio.run(_through(settings, "::1")).status == 200
    with pytest.raises(ApiError) as refused:
        asyncio.run(_through(settings, "192.0.2.10"))
    assert refused.value.status == 403
    assert refused.value.code == "loopback_only"


def test_without_a_token_loopback_clients_are_admin_only_in_dev_mode() -> None:
    async def role_of(settings: Settings) -> str:
        transport = mock.Mock()
        transport.get_extra_info.side_effect = (
            lambda key, default=None: ("127.0.0.1", 5555) if key == "peername" else default
        )
        request = make_mocked_request("GET", "/api/v1/actors", transport=transport)

        async def handler(served: web.Request) -> web.StreamResponse:
            return web.Response(text=served[ROLE_KEY])

        response = await make_auth_middleware(settings)(request, handler)
        assert isinstance(response, web.Response)
        return str(response.text)

    assert asyncio.run(role_of(Settings(dev_mode=True))) == Role.ADMIN
    assert asyncio.run(role_of(Settings())) == Role.OPERATOR
