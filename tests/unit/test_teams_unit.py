"""Fast in-process tests of the pure pieces: sentinel list parsing, request-log filters and parameters."""

from __future__ import annotations

import pytest
from arq.connections import RedisSettings

from api.tenancy.requestlog import Filters, parse_cursor, parse_filters
from shared.errors import ConfigError, InvalidRequest
from shared.redis_connect import arq_redis_settings, sentinel_hosts
from shared.settings import Settings


def test_sentinel_hosts() -> None:
    assert sentinel_hosts("") == []
    assert sentinel_hosts(" a:26379, b:1 ,[::1]:26380") == [("a", 26379), ("b", 1), ("::1", 26380)]
    for bad in ("a", "a:", ":26379", "a:0", "a:65536", "a:x"):
        with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
            sentinel_hosts(bad)


def test_settings_refuse_bad_sentinel_and_request_log_values() -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINELS"):
        Settings.from_env({"REDIS_SENTINELS": "nohost"})
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        Settings.from_env({"REDIS_SENTINELS": "s:26379", "REDIS_SENTINEL_MASTER": " "})
    with pytest.raises(ConfigError, match="REQUEST_LOG_MAX_ENTRIES"):
        Settings.from_env({"REQUEST_LOG_MAX_ENTRIES": "-1"})
    with pytest.raises(ConfigError, match="REQUEST_LOG_MAX_AGE"):
        Settings.from_env({"REQUEST_LOG_MAX_AGE": "-1"})


def test_arq_settings_take_the_sentinels_and_keep_the_urls_database_and_password() -> None:
    plain = arq_redis_settings(Settings(redis_url="redis://:pw@h:7000/3"))
    assert (plain.host, plain.port, plain.database, plain.sentinel) == ("h", 7000, 3, False)
    ha = arq_redis_settings(
        Settings(redis_url="redis://:pw@ignored:1/2", redis_sentinels="s1:26379,s2:26380", redis_sentinel_master="gw")
    )
    assert isinstance(ha, RedisSettings)
    assert (ha.host, ha.sentinel, ha.sentinel_master, ha.database, ha.password) == (
        [("s1", 26379), ("s2", 26380)],
        True,
        "gw",
        2,
        "pw",
    )


ENTRY = {"key_id": "key_1", "key_name": "team", "model": "m", "dialect": "chat", "status": 200, "time": 100.0}


@pytest.mark.parametrize(
    ("filters", "matches"),
    [
        (Filters(), True),
        (Filters(key="key_1"), True),
        (Filters(key="team"), True),
        (Filters(key="other"), False),
        (Filters(own="team"), False),  # a key's own requests: by id only, never by a name
        (Filters(own="key_1"), True),
        (Filters(model="m", dialect="chat"), True),
        (Filters(dialect="messages"), False),
        (Filters(status="200"), True),
        (Filters(status="2xx"), True),
        (Filters(status="5xx"), False),
        (Filters(status="ok"), True),
        (Filters(status="error"), False),
        (Filters(since=100.0, until=100.0), True),
        (Filters(since=100.5), False),
        (Filters(until=99.0), False),
    ],
)
def test_filters(filters: Filters, matches: bool) -> None:
    assert filters.matches(ENTRY) is matches


def test_a_stream_that_failed_after_its_200_is_an_error() -> None:
    failed = {**ENTRY, "error_code": "upstream_error"}
    assert Filters(status="error").matches(failed) and not Filters(status="ok").matches(failed)
    assert Filters(status="200").matches(failed)


def test_parameters() -> None:
    got = parse_filters({"key": "k", "status": "4xx", "since": "2026-01-01T00:00:00Z", "until": "5"})
    assert (got.key, got.status, got.since, got.until) == ("k", "4xx", 1767225600.0, 5.0)
    assert parse_filters({"key": "someone-else"}, own="key_me") == Filters(own="key_me")
    assert parse_cursor("1700000000000-3") == "1700000000000-3" and parse_cursor("") is None
    for params in ({"status": "20"}, {"status": "teapot"}, {"since": "yesterday"}):
        with pytest.raises(InvalidRequest):
            parse_filters(params)
    with pytest.raises(InvalidRequest):
        parse_cursor("1-2-3")
