import os
import socket

from ue_resync.systemd import ServiceManager, watchdog_interval


def test_messages_reach_the_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(2)
        service = ServiceManager(path)
        service.ready("ready: x")
        service.watchdog()
        service.stopping("bye")
        service.close()
        service.watchdog()  # after close: nothing, no error
        # A datagram sent after it: the next one to arrive, unless close() let one through.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as later:
            later.sendto(b"LATER", path)
        got = [server.recv(4096).decode() for _ in range(4)]
    assert got == ["READY=1\nSTATUS=ready: x", "WATCHDOG=1", "STOPPING=1\nSTATUS=bye", "LATER"]


def test_disabled_without_socket():
    service = ServiceManager("")
    assert not service.enabled
    service.ready("nothing happens")


def test_watchdog_interval(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    monkeypatch.delenv("WATCHDOG_PID")
    assert watchdog_interval() is None
