"""Starts a real `photondb serve` for driver tests.

The binary is `$PHOTONDB_BIN`, or `target/debug/photondb` of this workspace.
Each server gets free ports and its own temporary data directory.
"""
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINARY = os.environ.get("PHOTONDB_BIN", str(ROOT / "target" / "debug" / "photondb"))


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, data_dir, port=None, password="", extra_args=(), http_port=None):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.http_port = http_port or free_port()
        self.password = password
        self.extra_args = list(extra_args)
        self.process = None

    def start(self):
        # The log goes to a file: a pipe nobody reads would fill and stall
        # the server.
        self.log = tempfile.NamedTemporaryFile(prefix="photondb-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [BINARY, "serve", "--data-dir", self.data_dir, "--driver-port", str(self.port),
             "--initial-password", self.password, "--partitions", "4", "--wal-ring-mib", "4", "--http-port", str(self.http_port), *self.extra_args],
            stderr=self.log, stdout=subprocess.DEVNULL, env=dict(os.environ, PHOTONDB_LOG="debug"),
        )
        # Wait for the server to say it listens. (Probing with connect() can
        # succeed against nothing: a client socket given the same ephemeral
        # port as the target connects to itself.)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited: " + pathlib.Path(self.log.name).read_text())
            if "listening for RethinkDB drivers" in pathlib.Path(self.log.name).read_text(errors="replace"):
                return self
            time.sleep(0.05)
        raise RuntimeError("server did not start listening")

    def log_text(self):
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=60) == 0, "clean shutdown exits 0"


@pytest.fixture
def data_dir():
    with tempfile.TemporaryDirectory() as directory:
        yield directory


@pytest.fixture
def server(data_dir):
    running = Server(data_dir).start()
    yield running
    running.stop()
