"""Upstream traffic through outbound proxies (DECOPY_PROXY), for real: local proxies count it.

The workers get an upstream URL on a made-up host (``decopy-sim.invalid``) that only the test
proxies resolve (to the simulator on 127.0.0.1): an answer proves the traffic went through a proxy.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.procs import ROOT
from shared.errors import ConfigError
from shared.settings import Settings
from tests.conftest import Gateway, directive
from tests.proxy import Proxy

FAKE_HOST = "decopy-sim.invalid"
MODEL = "decopy-deepseek-v3"


@pytest.fixture
def make_proxy() -> Iterator[Callable[[str], Proxy]]:
    made: list[Proxy] = []

    def make(name: str) -> Proxy:
        proxy = Proxy(name, hosts={FAKE_HOST: "127.0.0.1"}).start()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


def proxied_gateway(make_gateway: Callable[..., Gateway], proxy_setting: str) -> Gateway:
    """A gateway whose one worker reaches the simulator only through ``proxy_setting``."""
    gw = make_gateway(workers=0)
    port = gw.sim_url.rsplit(":", 1)[1]
    gw.env = {**gw.env, "DECOPY_BASE_URL": f"http://{FAKE_HOST}:{port}", "DECOPY_PROXY": proxy_setting}
    gw.add_worker()
    gw.wait_workers_ready()
    return gw


@pytest.mark.parametrize(
    "value",
    [
        "ftp://127.0.0.1:21",
        "127.0.0.1:3128",
        "http://",
        "socks5://proxy:notaport",
        "http://proxy:3128/path",
        "http://ok:1,socks9://bad:2",
    ],
)
def test_malformed_proxy_urls_are_refused_at_start(value: str) -> None:
    with pytest.raises(ConfigError, match="DECOPY_PROXY"):
        Settings.from_env({"DECOPY_PROXY": value})


def test_worker_refuses_to_start_with_a_bad_proxy_and_hides_its_password() -> None:
    import os

    env = {**os.environ, "DECOPY_PROXY": "socks5://user:hunter2@proxy:99999"}
    result = subprocess.run(
        [sys.executable, "-m", "worker"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "DECOPY_PROXY" in result.stderr and "hunter2" not in result.stderr


def test_valid_proxy_lists_are_accepted() -> None:
    settings = Settings.from_env({"DECOPY_PROXY": "http://a:3128, https://b:443 ,socks5h://u:p@c:1080,socks4://d:1"})
    assert settings.decopy_proxy.count(",") == 3


def test_upstream_traffic_spreads_over_two_http_proxies(
    make_gateway: Callable[..., Gateway], make_proxy: Callable[[str], Proxy], tag: str
) -> None:
    one, two = make_proxy("one"), make_proxy("two")
    gw = proxied_gateway(make_gateway, f"{one.url()},{two.url()}")
    client = gw.client()

    def ask(i: int) -> str:
        # first_ms keeps the four calls in flight together, so the worker opens four sessions
        resp = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"{tag}-{i} " + directive(reply=[f"r{i}"], first_ms=1000)}],
        )
        return resp.choices[0].message.content or ""

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, range(4))) == [f"r{i}" for i in range(4)]
    entries = gw.sim_entries(tag)
    creates = [e for e in entries if e["kind"] == "create"]
    assert len(creates) == 4
    streams = [e for e in gw.sim_log() if e["kind"] == "stream" and e["job_id"] in {c["job_id"] for c in creates}]
    via = [e["headers"].get("x-via-proxy") for e in creates + streams]
    assert sorted(set(via)) == ["one", "two"]  # every upstream request went through a proxy, both were used
    assert one.http_requests + two.http_requests == 8  # 4 × (create-job + get-job), nothing else
    assert one.http_requests >= 2 and two.http_requests >= 2


def test_upstream_traffic_through_a_socks5_proxy(
    make_gateway: Callable[..., Gateway], make_proxy: Callable[[str], Proxy], tag: str
) -> None:
    socks = make_proxy("socks")
    gw = proxied_gateway(make_gateway, socks.url("socks5h"))  # socks5h: the proxy resolves the host name
    stream = gw.client().chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": f"{tag} " + directive(reply=["via ", "socks"])}]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "via socks"
    assert socks.socks_connects >= 1 and socks.http_requests == 0
    kinds = sorted(e["kind"] for e in gw.sim_entries(tag) if e["kind"] == "create")
    assert kinds == ["create"]
