"""Starts a real `photondb serve` for driver tests.

The binary is `$PHOTONDB_BIN`, or `target/debug/photondb` of this workspace.
Each server gets ports of its own choosing and its own temporary data directory.
"""
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINARY = os.environ.get("PHOTONDB_BIN", str(ROOT / "target" / "debug" / "photondb"))


LISTENING = re.compile(r"listening for RethinkDB drivers driver_address=\S+:(\d+)")
LISTENING_HTTP = re.compile(r"listening for HTTP http_address=\S+:(\d+)")


class Server:
    """A `photondb serve`; port 0 (the default) lets the server pick a free
    port, read back from its log, so no two servers can race for one."""

    def __init__(self, data_dir, port=0, password="", extra_args=(), http_port=0, cwd=None):
        self.data_dir = data_dir
        self.cwd = cwd
        self.port = port
        self.http_port = http_port
        self.password = password
        self.extra_args = list(extra_args)
        self.process = None

    def start(self):
        # The log goes to a file: a pipe nobody reads would fill and stall
        # the server.
        self.log = tempfile.NamedTemporaryFile(prefix="photondb-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [BINARY, "serve", "--data-dir", self.data_dir, "--driver-port", str(self.port),
             "--initial-password", self.password, "--partitions", "4", "--wal-ring-size", "4MiB", "--http-port", str(self.http_port), *self.extra_args],
            stderr=self.log, stdout=subprocess.DEVNULL, env=dict(os.environ, PHOTONDB_LOG="debug"), cwd=self.cwd,
        )
        # Wait for the server to say it listens, and where.
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited: " + self.log_text())
            text = self.log_text()
            driver, http = LISTENING.search(text), LISTENING_HTTP.search(text)
            if driver and http:
                self.port, self.http_port = int(driver.group(1)), int(http.group(1))
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
