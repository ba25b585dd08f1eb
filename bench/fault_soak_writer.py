#!/usr/bin/python3
"""A migration-like writer for bench/fault-soak, and the block format both share.

One writer process per export: CONNECTIONS libnbd connections (the migration client opens 2), each keeping DEPTH
1 MiB writes in flight, never flushing and never reconnecting (the migration client has no reconnect). Every block
written names its export, its block index and its generation (the how-many-th write of that block this is), and the
rest of the block is a fill derived from those three, so that a block read back from a file proves where it was
meant to go and that it is whole. A block is never written by two requests at once (across both connections), so
the newest acknowledged generation of a block is what its file must hold, or a newer one that was sent.

Runs until SIGTERM (or SIGINT), then lets the writes in flight complete, disconnects cleanly (the server syncs at
close) and writes its record as JSON to --out: the acknowledged and the newest sent generation of every block, and
every connection error.

Debian's /usr/bin/python3 has the nbd module (python3-libnbd).
"""
import argparse
import hashlib
import json
import random
import signal
import struct
import sys
import threading
import time

BLOCK = 1 << 20
DRAIN_TIMEOUT = 30  # seconds the writes in flight get to complete after the stop (a hung server is an error)
MAGIC = b"NBDXM-SOAK-BLK1\n"
NAME_FIELD = 192
HEADER = struct.Struct("<16s192sQQ32s")  # magic, export name, block index, generation, seed


def fill_block(buf, export, index, generation):
    """Writes into buf (a bytearray of BLOCK bytes) one block's content: a header naming export, block and
    generation, then a fill derived from them."""
    seed = hashlib.sha256(f"{export}/{index}/{generation}".encode()).digest()
    HEADER.pack_into(buf, 0, MAGIC, export.encode(), index, generation, seed)
    view = memoryview(buf)
    view[HEADER.size :] = (seed * ((BLOCK - HEADER.size) // len(seed)))[: BLOCK - HEADER.size]
    return buf


def block_bytes(export, index, generation):
    return bytes(fill_block(bytearray(BLOCK), export, index, generation))


def parse_block(data):
    """(export, index, generation, whole) of a block read back, or None when it holds no soak header."""
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        return None
    _, name, index, generation, _ = HEADER.unpack_from(data)
    export = name.rstrip(b"\0").decode(errors="replace")
    whole = len(data) == BLOCK and data == block_bytes(export, index, generation)
    return export, index, generation, whole


class Blocks:
    """The blocks of one export, shared by its connections: which are being written, sent and acknowledged."""

    def __init__(self, count, rng):
        self.lock = threading.Lock()
        self.count = count
        self.rng = rng
        self.busy = set()
        self.sent = {}  # block -> newest generation sent
        self.acked = {}  # block -> newest generation acknowledged
        self.writes_acked = 0

    def take(self):
        with self.lock:
            if len(self.busy) >= self.count:
                return None
            while True:
                index = self.rng.randrange(self.count)
                if index not in self.busy:
                    break
            self.busy.add(index)
            generation = self.sent.get(index, 0) + 1
            self.sent[index] = generation
            return index, generation

    def acknowledged(self, index, generation):
        with self.lock:
            self.acked[index] = max(self.acked.get(index, 0), generation)
            self.busy.discard(index)
            self.writes_acked += 1

    # A write whose connection failed stays busy: the server may still apply it, and a newer generation written
    # meanwhile by the other connection could then be overwritten by it.


class Pacer:
    """Spreads a connection's writes to at most rate MiB/s (0: as fast as the server takes them)."""

    def __init__(self, rate):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self, stop):
        if self.interval == 0:
            return
        delay = self.next - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        self.next = max(self.next, time.monotonic() - 1.0) + self.interval


def run_connection(nbd, number, args, blocks, stop, errors, counters):
    """One connection: DEPTH writes in flight until stop, then drain and disconnect. Errors end it (no reconnect)."""
    handle = nbd.NBD()
    inflight = {}  # cookie -> (block, generation, buffer kept alive until completion)
    # DEPTH buffers made once, each filled again only once its write completed. (Not a new nbd.Buffer per write:
    # libnbd 1.14's Python aio_pwrite without a completion callback never drops its reference to the buffer, which
    # leaked 1 MiB per write, 7 GiB per writer in 10 minutes, until the OOM killer ended a writer.)
    free = [nbd.Buffer.from_buffer(bytearray(BLOCK)) for _ in range(args.depth)]
    pacer = Pacer(args.rate / args.connections)
    try:
        handle.set_export_name(args.export)
        handle.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        handle.connect_tcp("127.0.0.1", str(args.port))
        counters["connected"] += 1
        while not stop.is_set() or inflight:
            while not stop.is_set() and len(inflight) < args.depth:
                pacer.wait(stop)
                if stop.is_set():
                    break
                taken = blocks.take()
                if taken is None:
                    break
                index, generation = taken
                buf = free.pop()
                fill_block(buf.to_buffer(), args.export, index, generation)
                cookie = handle.aio_pwrite(buf, index * BLOCK)
                inflight[cookie] = (index, generation, buf)
            if inflight:
                handle.poll(1000)
            if stop.is_set() and inflight and time.monotonic() - stop.since > DRAIN_TIMEOUT:
                raise nbd.Error(f"{len(inflight)} writes still in flight {DRAIN_TIMEOUT} s after the stop", 0)
            for cookie in list(inflight):
                if handle.aio_command_completed(cookie):  # raises nbd.Error when the write failed
                    index, generation, buf = inflight.pop(cookie)
                    blocks.acknowledged(index, generation)
                    free.append(buf)
        handle.shutdown()  # NBD_CMD_DISC: the server closes the connection, and syncs what it wrote
    except nbd.Error as e:
        errors.append({"connection": number, "time": time.time(), "error": str(e), "in_flight": len(inflight)})
    finally:
        del handle  # closes the connection (libnbd handles have no close method in Python)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--blocks", type=int, required=True, help="blocks of 1 MiB the export holds")
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--depth", type=int, default=4, help="writes in flight per connection")
    parser.add_argument("--rate", type=float, default=0, help="MiB/s for the whole export (0: unlimited)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="where the record goes (JSON)")
    args = parser.parse_args()
    import nbd  # here, so that bench/fault-soak can import the block format without libnbd

    stop = threading.Event()
    stop.since = None

    def on_signal(*_):
        stop.since = time.monotonic()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    blocks = Blocks(args.blocks, random.Random(args.seed))
    errors = []
    counters = {"connected": 0}
    threads = [
        threading.Thread(target=run_connection, args=(nbd, n, args, blocks, stop, errors, counters))
        for n in range(args.connections)
    ]
    started = time.time()
    for thread in threads:
        thread.start()
    announced = False
    while any(t.is_alive() for t in threads):
        if not announced and errors:
            print(f"failed: {errors[0]['error']}", flush=True)  # bench/fault-soak waits for this line
            on_signal()
            announced = True
        elif not announced and counters["connected"] == args.connections:
            print("ready", flush=True)
            announced = True
        for thread in threads:
            thread.join(0.05)
    record = {
        "export": args.export,
        "connections": args.connections,
        "connected": counters["connected"],
        "seconds": time.time() - started,
        "writes_acked": blocks.writes_acked,
        "acked": {str(k): v for k, v in sorted(blocks.acked.items())},
        "sent": {str(k): v for k, v in sorted(blocks.sent.items())},
        "errors": errors,
    }
    with open(args.out, "w") as out:
        json.dump(record, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
