#!/usr/bin/env python3
"""A user-space TCP proxy that adds a fixed one-way delay: a poor man's WAN for benches/wan.sh.

Listens on 127.0.0.1:LISTEN (0: a free port) and forwards every connection to
127.0.0.1:TARGET, delaying each direction by DELAY_MS (so the round trip gains 2 * DELAY_MS).
Bytes keep their order; there is no bandwidth limit beyond what one Python process moves
(hundreds of MB/s on loopback). Kernel netem is not needed (nor available in the bench
containers). Only application bytes are delayed: TCP's own ACKs and windows stay on loopback.

Per connection and direction: a reader task stamps each chunk it reads with deliver_at = now +
delay and queues it; a writer task sleeps until the head of the queue is due, writes every chunk
that is due in one go and waits for the socket to drain. End of stream is queued like data: when
one side half-closes, the other side's write half is shut DELAY_MS later (half-close preserved).
A reset or error from one side is queued the same way; when it is due, both sockets are closed
(the other side sees a close, not a reset). Any number of concurrent connections.

Prints "listening PORT" on stdout (flushed) once it accepts connections. SIGTERM / SIGINT close
the listener and all connections, print one stats line to stderr and exit 0.

Usage: wanproxy.py [--listen PORT] --target PORT --delay-ms MS
"""

import argparse
import asyncio
import collections
import signal
import socket
import sys

CHUNK = 256 * 1024
# The event loop sleeps in whole milliseconds, rounded up (epoll), so a timer fires 0..1 ms late.
# Chunks due within EARLY seconds are written now and sleeps end EARLY seconds before the due
# time: the delivery error is then about -0.5..+0.5 ms instead of 0..+1 ms (mean about 0).
EARLY = 0.0005


class Stats:
    def __init__(self):
        self.connections = 0
        self.active = 0
        self.bytes_up = 0  # client -> target
        self.bytes_down = 0  # target -> client
        self.writes = 0  # delivery error (write time - due time) over all delayed writes, s
        self.late_sum = 0.0
        self.late_min = 0.0
        self.late_max = 0.0

    def delivered(self, late):
        if self.writes == 0:
            self.late_min = self.late_max = late
        self.writes += 1
        self.late_sum += late
        self.late_min = min(self.late_min, late)
        self.late_max = max(self.late_max, late)


async def pump(reader, writer, delay, stats, up):
    """Copies reader to writer, each chunk delivered `delay` seconds after it was read."""
    loop = asyncio.get_running_loop()
    # (due, item): item is bytes, None (end of stream) or the source's error (a reset, also
    # delivered after the delay, as on a real path); due never decreases.
    # Unbounded: the reader never waits for the writer (no bandwidth-delay cap; fine for the
    # few MB a bench moves).
    queue = collections.deque()
    queued = asyncio.Event()

    def put(item):
        queue.append((loop.time() + delay, item))
        queued.set()

    async def read_side():
        try:
            while True:
                data = await reader.read(CHUNK)
                put(data or None)
                if not data:
                    return
                if up:
                    stats.bytes_up += len(data)
                else:
                    stats.bytes_down += len(data)
        except (ConnectionError, OSError) as e:
            put(e)

    async def write_side():
        while True:
            while not queue:
                queued.clear()
                await queued.wait()
            due = queue[0][0]
            wait = due - loop.time()
            if wait > EARLY:
                await asyncio.sleep(wait - EARLY)
                continue  # check again that it is due
            if delay > 0:
                stats.delivered(loop.time() - due)
            # everything due goes out in one write
            batch, end, limit = [], b"", loop.time() + EARLY
            while queue and queue[0][0] <= limit:
                item = queue.popleft()[1]
                if not isinstance(item, bytes):
                    end = item
                    break
                batch.append(item)
            if batch:
                writer.write(b"".join(batch))
                await writer.drain()
            if end is None:  # end of stream from the source: half-close towards the destination
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if isinstance(end, Exception):
                raise end

    reading = asyncio.ensure_future(read_side())
    try:
        await write_side()
    finally:
        reading.cancel()


async def handle(client_reader, client_writer, target, delay, stats):
    stats.connections += 1
    stats.active += 1
    server_writer = None
    try:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError as e:
            print(f"wanproxy: connect to 127.0.0.1:{target}: {e}", file=sys.stderr, flush=True)
            return
        up = asyncio.ensure_future(pump(client_reader, server_writer, delay, stats, True))
        down = asyncio.ensure_future(pump(server_reader, client_writer, delay, stats, False))
        pending = {up, down}
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.exception() is not None for t in done if not t.cancelled()):
                for t in pending:  # a reset or error: tear the whole connection down
                    t.cancel()
                break
    except asyncio.CancelledError:
        pass
    finally:
        stats.active -= 1
        for w in (client_writer, server_writer):
            if w is not None:
                w.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--target", type=int, required=True, help="port on 127.0.0.1 to forward to")
    ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay, ms (RTT / 2)")
    args = ap.parse_args()
    if args.delay_ms < 0:
        ap.error("--delay-ms must be >= 0")
    delay = args.delay_ms / 1000.0
    stats = Stats()
    conns = set()

    async def on_connect(r, w):
        sock = w.get_extra_info("socket")
        if sock is not None:  # asyncio sets TCP_NODELAY already; make sure
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = asyncio.current_task()
        conns.add(task)
        try:
            await handle(r, w, args.target, delay, stats)
        finally:
            conns.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", args.listen, backlog=256)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    for t in list(conns):
        t.cancel()
    await asyncio.gather(*conns, return_exceptions=True)
    late = ""
    if stats.writes:
        late = (
            f"; delivery error over {stats.writes} writes: mean {stats.late_sum / stats.writes * 1e3:+.2f} ms, "
            f"min {stats.late_min * 1e3:+.2f}, max {stats.late_max * 1e3:+.2f}"
        )
    print(
        f"wanproxy: {stats.connections} connections, {stats.bytes_up} bytes up, "
        f"{stats.bytes_down} bytes down, delay {args.delay_ms:g} ms each way{late}",
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
