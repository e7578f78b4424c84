"""The Forward protocol TCP server (loopback).

Per connection: read → feed a streaming unpacker → decode every complete message →
one intake commit for everything that arrived in that read (group commit keeps fsyncs
per event low) → `{"ack": chunk}` for each chunk, only after the commit is durable.

Retransmissions: a chunk id already durable in the spool is acknowledged again without
storing its events a second time; a chunk id another connection is spooling right now
waits for that commit. The spool persists chunk ids, so this holds across restarts.

Push back: when the spool is full the connection stops reading (TCP backpressure) and
withholds acks until shipping has made room.

Bad input (not msgpack, wrong shapes, oversized frames, invalid UTF-8 in a tag, a failed
handshake) closes that connection with a logged reason and a counter; events the same
connection sent before the bad frame are still committed and acknowledged. Other
connections are unaffected. Bad *events* inside a valid message are rejected one by one
(counted by reason) and the chunk is still acknowledged, as Forward has no per-event nack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from auditlock.sidecar.connections import ConnectionSlots
from auditlock.sidecar.intake import (
    STREAM,
    ChunkNotStored,
    Group,
    Processed,
    RateLimit,
    RecordTooLarge,
    SpoolFull,
)
from auditlock.sidecar.pipeline import MESSAGE_EVENT_BYTES
from auditlock.sidecar.pipeline.typed_records import TypedRecords
from auditlock.sidecar.sources import SourceContext
from auditlock.sidecar.sources.forward import protocol
from auditlock.sidecar.sources.forward.config import ForwardSource
from auditlock.sidecar.sources.forward.protocol import ProtocolError
from auditlock.sidecar.sources.forward.reader import INFLATE, Entries, MessageReader
from auditlock.sidecar.spool.chunk_ids import forward_key

log = logging.getLogger("auditlock.sidecar.forward")

INPUT = "forward"
READ_SIZE = 64 * 1024
# Bytes of unfinished messages buffered over all connections (each is held twice, by the
# reader's scout and decoder). Past it, a connection in the middle of a message waits for
# room before it reads more, except the one leader (`ForwardServer.may_read`): without
# it, max_connections partial frames of max_frame_bytes each could take several times
# the container's memory.
PARTIAL_BUDGET = 8 * 1024 * 1024


class ConnectionClosed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ForwardServer:
    def __init__(self, config: ForwardSource, context: SourceContext) -> None:
        self.config = config
        self.intake = context.intake
        self.metrics = context.intake.metrics
        self.port = config.port
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], _Connection] = {}
        self.closing = False  # stop() was called: connections finish their batch and end
        # A flood of bad connections must not flood the log: 20 lines/s, then a count.
        self.close_log_budget = RateLimit(per_second=20)
        self.slots = ConnectionSlots(INPUT, config.max_connections, self.metrics)
        self._accepted = 0
        self.partial_bytes = 0  # sum of the connections' `held`
        self._leader: _Connection | None = None  # the one reading past the budget
        # One message of the largest size must always be able to complete.
        self.partial_budget = max(PARTIAL_BUDGET, config.max_frame_bytes + READ_SIZE)
        self.room = asyncio.Event()
        self.room.set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.config.host, self.config.port, limit=READ_SIZE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("forward intake listening on %s:%d", self.config.host, self.port)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting; let connections finish the batch they are committing."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for task, connection in list(self._connections.items()):
            if not connection.busy:
                task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=grace)
        for task in list(self._connections):
            task.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def may_read(self, connection: _Connection) -> bool:
        """Whether `connection` may read more now: it holds nothing yet, the budget has
        room, or it is the leader.

        The leader is the connection holding the most (the oldest of equals) when the
        budget is found used, and stays the leader until what it holds halves (its
        message ended) or it closes: so one message always progresses, and only one
        grows past the budget. Chosen afresh at every check, connections that each
        finished a read would take turns holding the most, and each of them would read
        on to the per-message limit. Connections check before each read and, while
        decoding a message read whole, before they let others run (`_turn`).
        """
        if self.partial_bytes < self.partial_budget:
            self._leader = None
            return True
        if not connection.held:
            return True
        if self._leader is None:
            self._leader = max(self._connections.values(), key=lambda c: (c.held, -c.number))
        return self._leader is connection

    def step_down(self, connection: _Connection) -> None:
        """`connection` released most of what it held, or closed: a new leader is
        chosen at the next check, and waiting connections check again."""
        if self._leader is connection:
            self._leader = None
        self.room.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.slots.admit():  # over the cap: the socket back at once
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._accepted += 1
        connection = _Connection(self, reader, writer, self._accepted)
        self._connections[task] = connection
        try:
            await connection.run()
        except asyncio.CancelledError:
            pass
        finally:
            connection.account(0)
            self.step_down(connection)
            self.slots.release()
            self._connections.pop(task, None)
            # Its message's events and buffers go now, not after the close below lets
            # the next leader run.
            del connection
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Connection:
    def __init__(
        self,
        server: ForwardServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        number: int,
    ) -> None:
        self.server = server
        self.number = number
        self.config = server.config
        self.intake = server.intake
        self.metrics = server.metrics
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.busy = False
        self.held = 0  # bytes of an unfinished message buffered (server.partial_bytes)
        self.authenticated = self.config.shared_key is None
        self.nonce = b""
        self.messages = MessageReader(self.config.max_frame_bytes)
        self.messages.handshake = not self.authenticated
        # The message being read: its entries go through the pipeline as they arrive (in
        # batches), so only canonical bytes and a bounded rejection report are kept.
        self._current = Processed()
        self._current_bytes = 0

    async def run(self) -> None:
        if not self.authenticated:
            self.nonce = protocol.new_nonce()
            self.writer.write(protocol.helo(self.nonce))
        bytes_in = self.metrics.bytes_in.labels(INPUT)
        config = self.config
        loop = asyncio.get_running_loop()
        handshake_deadline = loop.time() + config.handshake_timeout_seconds
        frame_deadline = 0.0
        frame_mark = -1  # messages completed when frame_deadline was set
        while not self.server.closing:
            # What a client may take before its next bytes: the rest of the handshake
            # (shared key), of the message it started, or an idle pause between messages.
            if not self.authenticated:
                phase, deadline = "handshake", handshake_deadline
            elif self.messages.in_message:
                # Per message: a client streaming many messages is always inside one.
                if frame_mark != self.messages.completed:
                    frame_mark = self.messages.completed
                    frame_deadline = loop.time() + config.frame_timeout_seconds
                phase, deadline = "frame", frame_deadline
            else:
                frame_mark = -1
                phase, deadline = "idle", loop.time() + config.idle_timeout_seconds
            try:
                async with asyncio.timeout_at(deadline):
                    server = self.server
                    while not server.may_read(self):  # the budget is used
                        server.room.clear()
                        await server.room.wait()
                    data = await self.reader.read(READ_SIZE)
            except TimeoutError:
                self.server.slots.timed_out(phase)
                self.metrics.connections_closed.labels(f"{phase}_timeout").inc()
                return
            if not data:
                return
            bytes_in.inc(len(data))
            self.busy = True
            try:
                try:
                    await self._on_data(data)
                finally:
                    # Held for an unfinished message: its bytes (buffered twice) and its
                    # events prepared so far.
                    self.account(self.messages.held + self._current_bytes)
            except ConnectionClosed as exc:
                self.metrics.connections_closed.labels(exc.reason).inc()
                budget = self.server.close_log_budget
                if budget.allow():
                    held = budget.take_suppressed()
                    log.warning(
                        "closing forward connection %s: %s%s",
                        self.peer,
                        exc,
                        f" ({held} more closed since the last message, reasons in "
                        "auditlock_sidecar_forward_connections_closed_total)"
                        if held
                        else "",
                    )
                return
            except (ConnectionError, OSError) as exc:
                log.info("forward connection %s lost: %s", self.peer, exc)
                return
            finally:
                self.busy = False

    def account(self, held: int) -> None:
        """Record how many bytes of an unfinished message this connection buffers."""
        server = self.server
        before = self.held
        server.partial_bytes += held - before
        self.held = held
        if 2 * held <= before:  # its message ended (or it closed)
            server.step_down(self)
        elif held < before or server.partial_bytes < server.partial_budget:
            server.room.set()  # waiters check again: there may be room

    async def _on_data(self, data: bytes) -> None:
        batch = _Batch()
        failure: ConnectionClosed | None = None
        try:
            self.messages.feed(data)
            for item in self.messages.read():
                if not self.authenticated:
                    self._handshake(item)
                    self.messages.handshake = False
                elif type(item) is Entries or type(item) is TypedRecords:
                    # Counted when committed: the message may be a retransmission.
                    part = self.intake.prepare(INPUT, item, count=False)
                    self._current.extend(part, self._current.seen)
                    self._current.seen += len(item)
                    self._current_bytes += sum(map(len, part.events))
                    if self._current_bytes > MESSAGE_EVENT_BYTES:
                        raise ProtocolError(
                            "too_large",
                            f"the message's events take more than {MESSAGE_EVENT_BYTES} "
                            "bytes as ledger lines: send smaller chunks",
                        )
                    # A message can hold millions of entries: let other connections
                    # and the health probes in between batches, once nothing decoded is
                    # held (within a packed blob: between its spans), so connections
                    # taking turns do not each hold decoded entries (reader.py).
                    del item, part
                    if self.messages.settled:
                        await self._turn(batch)
                elif item is INFLATE:
                    # A few KiB of gzip read within the budget become up to
                    # max_frame_bytes, and their events more: counted before they exist.
                    await self._turn(batch, self.config.max_frame_bytes)
                else:
                    option = item.option
                    chunk = option.get("chunk") if option else None
                    batch.add(self._current, chunk, self._current_bytes)
                    self._current = Processed()
                    self._current_bytes = 0
        except ProtocolError as exc:
            failure = ConnectionClosed(exc.reason, str(exc))
        except ConnectionClosed as exc:
            failure = exc
        except Exception as exc:  # a decoder gap: still only this connection's problem
            log.exception("unexpected error decoding a forward message from %s", self.peer)
            failure = ConnectionClosed("bad_message", f"undecodable message: {exc!r:.200}")
        if batch.groups:
            try:
                await self._commit(batch)
            except (ConnectionClosed, ConnectionError, OSError):
                raise
            except Exception as exc:  # a gap in validation: never ack, never crash
                log.exception("cannot spool events from forward connection %s", self.peer)
                raise ConnectionClosed(
                    "internal_error", f"events not stored: {exc!r:.200}"
                ) from None
        if failure is not None:
            # Not left in a local: the traceback holds this frame, and the frame would
            # hold the error, a cycle that keeps the connection (its message's events)
            # until a full collection, which is rare (memory.settle_gc).
            try:
                raise failure
            finally:
                del failure

    async def _turn(self, batch: _Batch, reserve: int = 0) -> None:
        """Let other connections run, after counting what this one holds now (plus
        `reserve`, about to be taken). Within a packed blob, past the budget it waits
        for room unless it is the leader, as before a read: a message read whole within
        the budget (a compressed one) grows while it is decoded. Elsewhere the wait
        before the next read does (within the frame timeout)."""
        self.account(self.messages.held + self._current_bytes + batch.event_bytes + reserve)
        server = self.server
        if not self.messages.in_blob or server.may_read(self):
            await asyncio.sleep(0)
            return
        while not server.may_read(self):
            server.room.clear()
            await server.room.wait()

    def _handshake(self, message: Any) -> None:
        assert self.config.shared_key is not None
        ok, reason, pong = protocol.check_ping(
            message, self.nonce, self.config.shared_key, self.config.self_hostname
        )
        self.writer.write(pong)
        if not ok:
            raise ConnectionClosed("auth_failed", f"handshake failed: {reason}")
        self.authenticated = True

    async def _commit(self, batch: _Batch) -> None:
        server = self.server
        try:
            committed = await self.intake.commit(
                INPUT, batch.groups, STREAM, stopping=lambda: server.closing
            )
        except RecordTooLarge as exc:
            raise ConnectionClosed("too_large_for_spool", str(exc)) from None
        except SpoolFull:  # the spool waits for room unless the sidecar is stopping
            raise ConnectionClosed("shutdown", "sidecar is shutting down") from None
        except ChunkNotStored as exc:  # another connection's commit of a chunk failed
            if exc.duplicates:
                self.metrics.duplicate_chunks.inc(exc.duplicates)
            raise ConnectionClosed("spool_error", str(exc)) from None
        if committed.duplicates:
            self.metrics.duplicate_chunks.inc(committed.duplicates)
        if batch.chunks:
            self.writer.write(b"".join(protocol.ack(c) for c in batch.chunks))
            await self.writer.drain()


class _Batch:
    """The messages completed by one read, prepared, with their chunks in order."""

    def __init__(self) -> None:
        self.groups: list[Group] = []  # keyed by the chunk id (spool/chunk_ids.py)
        self.chunks: list[str] = []
        self.event_bytes = 0  # of the prepared events, until they are committed

    def add(self, prepared: Processed, chunk: str | None, event_bytes: int) -> None:
        self.groups.append((prepared, None if chunk is None else forward_key(chunk)))
        self.event_bytes += event_bytes
        if chunk is not None:
            self.chunks.append(chunk)
