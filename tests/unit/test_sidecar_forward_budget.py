"""The Forward listener's budget for unfinished messages (sources/forward/server.py): past
it, one leader reads on and every other connection waits, even connections that finished
a read after the budget was used and then hold the most."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditlock.sidecar.metrics import Metrics
from auditlock.sidecar.sources import SourceContext
from auditlock.sidecar.sources.forward.config import ForwardSource
from auditlock.sidecar.sources.forward.server import ForwardServer, _Connection

BUDGET = 1000


class _Writer:
    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 5000)


class _Intake:
    def __init__(self) -> None:
        self.metrics = Metrics()


def server_with(count: int) -> tuple[ForwardServer, list[_Connection]]:
    context: Any = SourceContext(intake=_Intake(), state_dir=Path("."))  # type: ignore[arg-type]
    server = ForwardServer(ForwardSource(port=0), context)
    server.partial_budget = BUDGET
    connections = []
    for number in range(1, count + 1):
        connection = _Connection(server, None, _Writer(), number)  # type: ignore[arg-type]
        server._connections[object()] = connection  # type: ignore[index]
        connections.append(connection)
    return server, connections


def readers(server: ForwardServer, connections: list[_Connection]) -> list[int]:
    return [c.number for c in connections if server.may_read(c)]


def test_under_the_budget_every_connection_reads() -> None:
    server, connections = server_with(3)
    for connection in connections:
        connection.account(300)
    assert server.partial_bytes == 900
    assert readers(server, connections) == [1, 2, 3]


def test_connections_that_finish_a_read_past_the_budget_do_not_take_turns_leading() -> None:
    server, (a, b, c) = server_with(3)
    for connection in (a, b, c):
        connection.account(300)  # all three read at once while there was room
    a.account(600)
    assert readers(server, [a, b, c]) == [1]
    # b and c were reading when the budget was used: each finishes its read holding the
    # most in turn, and still waits for the leader.
    b.account(700)
    assert readers(server, [a, b, c]) == [1]
    c.account(800)
    assert readers(server, [a, b, c]) == [1]
    a.account(900)
    assert readers(server, [a, b, c]) == [1]


def test_the_leader_steps_down_when_its_message_ends_or_it_closes() -> None:
    server, (a, b, c) = server_with(3)
    a.account(600)
    b.account(400)
    c.account(300)
    assert readers(server, [a, b, c]) == [1]
    a.account(0)  # its message ended: room again
    assert readers(server, [a, b, c]) == [1, 2, 3]
    a.account(500)
    assert readers(server, [a, b, c]) == [1]  # the one holding the most leads
    server.room.clear()
    a.account(450)  # a little less: still the leader, waiters check for room
    assert server.room.is_set()
    b.account(500)
    assert readers(server, [a, b, c]) == [1]
    a.account(200)  # halved (a message ended): the one holding the most leads
    assert readers(server, [a, b, c]) == [2]
    server.room.clear()
    b.account(0)
    server.step_down(b)  # closed (ForwardServer._handle)
    assert server.room.is_set()
    assert readers(server, [a, b, c]) == [1, 2, 3]  # 500 left: room


def test_a_closed_leader_hands_over_to_the_one_holding_the_most() -> None:
    server, (a, b, c) = server_with(3)
    a.account(500)
    b.account(450)
    c.account(300)
    assert readers(server, [a, b, c]) == [1]
    a.account(0)
    server.step_down(a)
    server._connections = {k: v for k, v in server._connections.items() if v is not a}
    b.account(800)  # b read on while there was room
    assert readers(server, [b, c]) == [2]
