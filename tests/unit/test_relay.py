"""The relay pieces in one process against a real Redis: the API's pub/sub hub and its
subscriptions, the worker's pipelined publisher, and the API's job feed over both."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from api.relay.feed import JobFeed
from api.relay.hub import PubSubHub, Subscription
from shared import messages, names
from shared.errors import GatewayError, GatewayTimeout, ServiceUnavailable, UpstreamError
from shared.messages import Message
from shared.queue import JobQueue, new_job_id
from shared.settings import Settings
from tests.unit.conftest import arun
from worker.jobs.publish import PipelinedConnection


async def until(predicate: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition (never for a clock); fail naming it if it does not come."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(what)


async def started_hub(redis: Redis) -> PubSubHub:
    hub = PubSubHub(redis, subscribe_timeout=5)
    await hub.start()
    assert hub.connected
    return hub


# --- Subscription: the receiving end ------------------------------------------------------------


def test_subscription_hands_items_over_in_order_and_wakes_its_reader() -> None:
    async def body() -> None:
        sub = Subscription("job", b"chan", asyncio.get_running_loop())
        waiter = asyncio.create_task(sub.wait(30))
        await asyncio.sleep(0)
        assert not waiter.done()
        sub.put(b"one")
        sub.put(b"two")
        await waiter  # woken by the first item, long before its timeout
        assert sub.take() == b"one" and sub.take() == b"two" and sub.take() is None
        sub.close()

    arun(body())


def test_subscription_wait_ends_by_its_deadline_with_nothing_there() -> None:
    async def body() -> None:
        sub = Subscription("job", b"chan", asyncio.get_running_loop())
        await sub.wait(0.01)  # returns (possibly early): the caller checks its own deadline
        assert sub.take() is None
        # A later, sooner deadline moves the one timer; a longer one does not delay it.
        await asyncio.wait_for(sub.wait(0.01), 5)
        sub.close()

    arun(body())


# --- PubSubHub: one connection, dispatch by channel ---------------------------------------------


def test_hub_confirms_subscriptions_and_dispatches_each_message_to_its_channel(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        a, b = await hub.subscribe("a"), await hub.subscribe("b")
        assert hub.active == 2
        # Confirmed: a message published right after subscribe() returned is not lost.
        assert await redis.publish(names.job_channel("a"), b"to a") == 1
        await redis.publish(names.job_channel("b"), b"to b 1")
        await redis.publish(names.job_channel("b"), b"to b 2")
        await redis.publish(names.job_channel("nobody"), b"dropped")
        await until(lambda: len(b._items) == 2, "both messages for b")
        assert a.take() == b"to a" and a.take() is None
        assert b.take() == b"to b 1" and b.take() == b"to b 2"

        hub.unsubscribe(a)
        assert hub.active == 1

        async def a_gone() -> bool:
            counts = dict(await redis.pubsub_numsub(names.job_channel("a")))
            return bool(counts[names.job_channel("a").encode()] == 0)

        await until(a_gone, "the UNSUBSCRIBE reached Redis")
        await hub.stop()
        await redis.aclose()

    arun(body())


def test_hub_fails_every_stream_when_redis_drops_the_connection_then_reconnects(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        sub = await hub.subscribe("job")
        await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await until(lambda: bool(sub._items), "the subscriber told")
        item = sub.take()
        assert isinstance(item, ServiceUnavailable) and item.code == "redis_unavailable"
        await until(lambda: hub.connected, "the hub reconnected")
        again = await hub.subscribe("job")
        await redis.publish(names.job_channel("job"), b"after")
        await until(lambda: bool(again._items), "a message after the reconnection")
        assert again.take() == b"after"
        await hub.stop()
        await redis.aclose()

    arun(body())


def test_hub_refuses_to_subscribe_while_redis_is_unreachable() -> None:
    async def body() -> None:
        redis = Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
        hub = PubSubHub(redis, subscribe_timeout=0.2)
        await hub.start()
        with pytest.raises(ServiceUnavailable) as caught:
            await hub.subscribe("job")
        assert caught.value.code == "redis_unavailable"
        await hub.stop()
        await redis.aclose()

    arun(body())


# --- PipelinedConnection: the worker's publisher ------------------------------------------------


def test_publisher_pipelines_commands_and_reads_replies_in_order(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        out = PipelinedConnection(redis)
        replies = [await out.send("RPUSH", "list", str(i)) for i in range(200)]
        assert not replies[0].done  # sent without waiting for Redis
        assert await replies[-1].wait() == 200
        assert [r.result() for r in replies] == list(range(1, 201))  # each reply to its own command
        assert await redis.lrange("list", 0, -1) == [str(i).encode() for i in range(200)]  # sent in order
        await out.close()
        await redis.aclose()

    arun(body())


def test_publisher_error_reply_fails_only_its_command(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        out = PipelinedConnection(redis)
        await redis.set("text", "x")
        bad = await out.send("LPUSH", "text", "y")  # WRONGTYPE
        good = await out.send("PING")
        assert await good.wait() in (b"PONG", True)
        with pytest.raises(Exception, match="WRONGTYPE"):
            bad.result()
        await out.close()
        await redis.aclose()

    arun(body())


def test_publisher_fails_pending_replies_when_the_connection_drops_and_reconnects(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        out = PipelinedConnection(redis)
        await (await out.send("CLIENT", "SETNAME", "publisher")).wait()
        blocked = await out.send("BLPOP", "never", "0")  # no reply until the connection ends
        await redis.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        with pytest.raises(Exception):
            await asyncio.wait_for(blocked.wait(), 10)
        assert await (await out.send("PING")).wait() in (b"PONG", True)  # connects again
        await out.close()
        await redis.aclose()

    arun(body())


def test_publisher_notices_a_stalled_redis(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        out = PipelinedConnection(redis)
        blocked = await out.send("BLPOP", "never", "0")
        assert not out.stalled(3600)
        await until(lambda: out.stalled(0.0), "stalled() reports the overdue reply")
        with pytest.raises(Exception, match="did not answer"):
            blocked.result()
        await out.close()
        await redis.aclose()

    arun(body())


# --- JobFeed: the API's view of one job, over the hub -------------------------------------------


def _settings(**env: str) -> Settings:
    return Settings.from_env(
        {
            "QUEUE_TIMEOUT": "30",
            "FIRST_TOKEN_TIMEOUT": "30",
            "IDLE_TIMEOUT": "30",
            "TOTAL_TIMEOUT": "60",
            **env,
        }
    )


async def _feed(redis: Redis, hub: PubSubHub, settings: Settings) -> tuple[JobFeed, str]:
    job_id = new_job_id()
    queue = JobQueue(redis, max_queue=10, expires_s=60)
    sub = await hub.subscribe(job_id)
    await queue.enqueue(job_id, {"prompt": "hi"})
    return JobFeed(hub=hub, queue=queue, sub=sub, settings=settings), job_id


async def _publish(redis: Redis, job_id: str, *msgs: Message) -> None:
    for seq, msg in enumerate(msgs):
        await redis.publish(names.job_channel(job_id), messages.encode({**msg, "seq": seq}))


def test_job_feed_turns_the_channel_into_events(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        feed, job_id = await _feed(redis, hub, _settings())
        await _publish(
            redis,
            job_id,
            {"kind": "start", "worker": "w1"},
            {"kind": "delta", "text": "Hel"},
            {"kind": "alive"},
            {"kind": "delta", "text": "lo"},
            {"kind": "done", "finish_reason": "stop"},
        )
        events = [await feed.next(), await feed.next(), await feed.next()]
        assert events == [("delta", "Hel"), ("delta", "lo"), ("done", "stop")]
        assert feed.worker == "w1" and feed.finished and feed.first_token is not None
        await feed.close()
        assert hub.active == 0
        await hub.stop()
        await redis.aclose()

    arun(body())


@pytest.mark.parametrize(
    ("msgs", "code"),
    [
        ([{"kind": "start"}, {"kind": "start"}], "job_rerun"),
        ([{"kind": "start"}, {"kind": "error", "error": UpstreamError("no", code="upstream_http").to_wire()}], None),
    ],
)
def test_job_feed_refuses_a_rerun_and_relays_a_workers_error(
    redis_url: str, msgs: list[Message], code: str | None
) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        feed, job_id = await _feed(redis, hub, _settings())
        await _publish(redis, job_id, *msgs)
        with pytest.raises(GatewayError) as caught:
            await feed.next()
        assert caught.value.code == (code or "upstream_http")
        await feed.close()
        await hub.stop()
        await redis.aclose()

    arun(body())


def test_job_feed_reports_a_gap_in_the_sequence(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        feed, job_id = await _feed(redis, hub, _settings())
        channel = names.job_channel(job_id)
        await redis.publish(channel, messages.encode({"seq": 0, "kind": "start"}))
        await redis.publish(channel, messages.encode({"seq": 2, "kind": "delta", "text": "x"}))
        with pytest.raises(UpstreamError) as caught:
            await feed.next()
        assert caught.value.code == "stream_gap"
        await feed.close()
        await hub.stop()
        await redis.aclose()

    arun(body())


def test_job_feed_queue_deadline_withdraws_the_job(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        feed, job_id = await _feed(redis, hub, _settings(QUEUE_TIMEOUT="0.05"))
        with pytest.raises(ServiceUnavailable) as caught:
            await feed.next()
        assert caught.value.code == "queue_timeout"
        await feed.close()
        assert await redis.zscore(names.QUEUE, job_id) is None  # withdrawn: no worker will run it
        await hub.stop()
        await redis.aclose()

    arun(body())


def test_job_feed_idle_deadline_counts_from_the_last_message(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        feed, job_id = await _feed(redis, hub, _settings(IDLE_TIMEOUT="0.2", WORKER_HEARTBEAT="0.1"))
        await _publish(redis, job_id, {"kind": "start"})
        with pytest.raises(GatewayTimeout) as caught:
            await feed.next()
        assert caught.value.code == "idle_timeout"
        await feed.close()
        await hub.stop()
        await redis.aclose()

    arun(body())


def test_job_feed_wait_returns_none_and_leaves_the_feed_intact(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        feed, job_id = await _feed(redis, hub, _settings())
        assert await feed.next(wait=0.01) is None
        await _publish(redis, job_id, {"kind": "start"}, {"kind": "delta", "text": "late"})
        assert await feed.next() == ("delta", "late")
        await feed.close()
        await hub.stop()
        await redis.aclose()

    arun(body())


def test_job_feed_abort_ends_next_with_the_error(redis_url: str) -> None:
    async def body() -> None:
        redis = Redis.from_url(redis_url)
        hub = await started_hub(redis)
        feed, _ = await _feed(redis, hub, _settings())
        feed.abort(ServiceUnavailable("bye", code="shutting_down"))
        with pytest.raises(ServiceUnavailable, match="bye"):
            await feed.next()
        await feed.close()
        await hub.stop()
        await redis.aclose()

    arun(body())
