"""The test helpers' port choice: a server started minutes later must still find its port free."""

import socket

from tests.procs import PORTS_FROM, _ephemeral_low, free_port


def test_free_port_is_bindable_and_outside_the_ephemeral_range():
    low = _ephemeral_low()
    for _ in range(20):
        port = free_port()
        assert PORTS_FROM <= port < low  # the kernel never hands these out to outgoing connections
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_free_port_skips_a_port_that_is_taken():
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        taken = held.getsockname()[1]
        assert all(free_port() != taken for _ in range(200))
