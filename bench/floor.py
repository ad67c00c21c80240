"""The floor: what one relay hop of a piece costs a Python process on this machine, whatever it runs.

Every piece of an answer crosses the gateway in two hops: the worker reads it from the upstream
and writes it to Redis; the API reads it from Redis and writes it to the client. Whatever the
code between, each hop is at least one wake-up of the process on a socket, one read and one
write. This measures that and nothing more, three ways, with the shape of the benchmark's load
(``--streams`` connections, one small message each every ``--interval-ms``, staggered, so each
arrival is its own wake-up as in a real stream):

- ``callback``: an ``asyncio.Protocol`` on uvloop writing each message on from ``data_received``:
  the least a Python event loop can do per hop;
- ``task``: a task per connection awaiting ``StreamReader.read`` then ``StreamWriter.write``: the
  way most asyncio code (redis-py, aiohttp's reads, the ASGI servers' callers) is written;
- ``task+reply``: the same, plus a reply read back from the far side (a request/response hop,
  as a Redis command awaited for its answer).

CPU is the relaying process's own (user + system, ``getrusage``), per message. ``python -m
bench.floor`` prints the figures; ``make bench`` records them in its JSON and README table.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import socket
import time
from typing import Any

import orjson
import uvloop

MESSAGE = b'{"seq":7,"kind":"delta","text":"piece 7 of stream 12 "}\n'


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _sink(port_q: Any, reply: bool) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if reply:
                writer.write(b":1\r\n" * data.count(b"\n"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_q.put(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _run_sink(port_q: Any, reply: bool) -> None:
    uvloop.run(_sink(port_q, reply))


async def _relay(mode: str, listen: socket.socket, sink_port: int, streams: int, out_q: Any) -> None:
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    counted = [0]
    start_cpu = [0.0]

    class Forward(asyncio.Protocol):
        def __init__(self, target: asyncio.Transport) -> None:
            self.target = target

        def data_received(self, data: bytes) -> None:
            counted[0] += data.count(b"\n")
            self.target.write(data)

        def connection_lost(self, exc: Exception | None) -> None:
            done.set()

    class Drain(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            pass

    async def serve_task(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sink_r, sink_w = await asyncio.open_connection("127.0.0.1", sink_port)
        while data := await reader.read(65536):
            counted[0] += data.count(b"\n")
            sink_w.write(data)
            if mode == "task+reply":
                await sink_r.readexactly(4 * data.count(b"\n"))
        done.set()

    listen.setblocking(False)
    accepted = 0
    tasks = []
    while accepted < streams:
        conn, _ = await loop.sock_accept(listen)
        accepted += 1
        if mode == "callback":
            target, _proto = await loop.create_connection(Drain, "127.0.0.1", sink_port)
            await loop.connect_accepted_socket(lambda t=target: Forward(t), conn)  # type: ignore[misc]
        else:
            reader, writer = await asyncio.open_connection(sock=conn)
            tasks.append(asyncio.create_task(serve_task(reader, writer)))
    start_cpu[0] = _cpu()
    await done.wait()
    out_q.put((counted[0], _cpu() - start_cpu[0]))


def _run_relay(mode: str, listen: socket.socket, sink_port: int, streams: int, out_q: Any) -> None:
    uvloop.run(_relay(mode, listen, sink_port, streams, out_q))


def _drive(port: int, streams: int, interval: float, seconds: float) -> int:
    """Send MESSAGE on each connection every ``interval`` s, staggered; returns messages sent."""

    async def run() -> int:
        writers = []
        for _ in range(streams):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writers.append(writer)
        await asyncio.sleep(0.3)  # the relay is connected on both sides before the clock starts
        sent = 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        step = interval / streams
        i = 0
        while loop.time() - t0 < seconds:
            writers[i % streams].write(MESSAGE)
            sent += 1
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * step - loop.time()))
        await asyncio.sleep(0.2)
        for writer in writers:
            writer.close()
        return sent

    return uvloop.run(run())


def measure(mode: str, *, streams: int = 15, interval_ms: float = 20.0, seconds: float = 3.0) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    port_q, out_q = ctx.Queue(), ctx.Queue()
    sink = ctx.Process(target=_run_sink, args=(port_q, mode == "task+reply"), daemon=True)
    sink.start()
    sink_port = port_q.get(timeout=10)
    listen = socket.socket()
    listen.bind(("127.0.0.1", 0))
    listen.listen(streams + 8)
    relay = ctx.Process(target=_run_relay, args=(mode, listen, sink_port, streams, out_q), daemon=True)
    relay.start()
    try:
        sent = _drive(listen.getsockname()[1], streams, interval_ms / 1000, seconds)
        relayed, cpu_s = out_q.get(timeout=30)
    finally:
        relay.kill()
        sink.kill()
        listen.close()
    return {
        "mode": mode,
        "messages": sent,
        "relayed": relayed,
        "cpu_us_per_message": round(cpu_s / relayed * 1e6, 1) if relayed else None,
        "rate_per_s": round(relayed / seconds, 1),
    }


def run_all(**kwargs: Any) -> dict[str, Any]:
    results = [measure(mode, **kwargs) for mode in ("callback", "task", "task+reply")]
    return {"shape": kwargs, "hops": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=15)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    started = time.monotonic()
    result = run_all(streams=args.streams, interval_ms=args.interval_ms, seconds=args.seconds)
    for hop in result["hops"]:
        print(
            f"{hop['mode']:>11}: {hop['cpu_us_per_message']} µs of CPU per relayed message "
            f"({hop['relayed']} messages, {hop['rate_per_s']}/s)"
        )
    print(orjson.dumps(result).decode())
    print(f"({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
