"""Guessing the master key is throttled, through a real API (two replicas) and a real Redis.

Before: 300 wrong keys went to the dashboard's login form in 0.39 s, none delayed, and Bearer
guesses on /admin were as free. Now each address, and everyone together, gets a few failures per
window, counted in Redis so every replica sees them, then 429 with Retry-After.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import Gateway, start_gateway

MASTER = "sk-master-hardening-" + "k" * 24
PER_ADDRESS, GLOBAL = 4, 9


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    env = {
        "API_MASTER_KEY": MASTER,
        "LOGIN_MAX_FAILURES": str(PER_ADDRESS),
        "LOGIN_MAX_FAILURES_GLOBAL": str(GLOBAL),
        "LOGIN_WINDOW": "120",
    }
    gateway = start_gateway(env, workers=0)
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture(autouse=True)
def fresh_counters(gw: Gateway) -> Iterator[None]:
    r = redis.Redis.from_url(gw.redis_url)
    for key in r.scan_iter("decopy:login:*"):
        r.delete(key)
    r.close()
    yield


def client(gw: Gateway, source: str = "127.0.0.1", base_url: str | None = None) -> httpx.Client:
    """A client whose connections come from ``source`` (any 127.0.0.0/8 address works on loopback)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=base_url or gw.base_url, transport=transport, timeout=10)


def login(c: httpx.Client, key: str) -> httpx.Response:
    return c.post("/dashboard/login", data={"key": key})


def admin(c: httpx.Client, key: str) -> httpx.Response:
    return c.get("/admin/keys", headers={"Authorization": f"Bearer {key}"})


def test_dashboard_login_is_throttled_per_address_then_even_the_right_key_waits(gw: Gateway) -> None:
    with client(gw) as c, client(gw, "127.0.0.2") as other:
        for _ in range(PER_ADDRESS):
            assert login(c, "sk-guess").status_code == 401
        refused = login(c, "sk-guess")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "Too many failed logins" in refused.text
        assert login(c, MASTER).status_code == 429  # the right key finds nothing while throttled
        assert login(other, MASTER).status_code == 303  # another address is not held up


def test_admin_bearer_guesses_are_throttled_and_share_the_counter_with_the_login(gw: Gateway) -> None:
    with client(gw) as c:
        for _ in range(PER_ADDRESS - 1):
            assert admin(c, "sk-guess").status_code == 401
        assert login(c, "sk-guess").status_code == 401
        refused = admin(c, MASTER)
        assert refused.status_code == 429 and refused.headers["Retry-After"]
        assert refused.json()["error"]["code"] == "login_throttled"


def test_a_success_clears_the_address_counter(gw: Gateway) -> None:
    with client(gw) as c:
        for _ in range(2):  # 6 failures in all: over the address's limit, under the global one
            for _ in range(PER_ADDRESS - 1):
                assert admin(c, "sk-guess").status_code == 401
            assert admin(c, MASTER).status_code == 200


def test_guesses_from_many_addresses_hit_the_global_limit_on_every_replica(gw: Gateway) -> None:
    _, second = gw.stack.api(gw.env)  # another replica on the same Redis
    for i in range(GLOBAL):
        with client(gw, f"127.0.1.{i + 1}") as c:
            assert login(c, "sk-guess").status_code == 401
    with client(gw, "127.0.2.1", base_url=second) as fresh:
        assert login(fresh, MASTER).status_code == 429
        assert admin(fresh, MASTER).status_code == 429


def test_start_up_warns_about_a_short_master_key() -> None:
    gw = start_gateway({"API_MASTER_KEY": "sk-short"}, workers=0)
    try:
        assert "API_MASTER_KEY is only 8 characters long" in gw.api_proc.log()
    finally:
        gw.stop()
    gw = start_gateway({"API_MASTER_KEY": MASTER}, workers=0)
    try:
        assert "API_MASTER_KEY is only" not in gw.api_proc.log()
    finally:
        gw.stop()
