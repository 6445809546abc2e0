"""Clean shutdown through the driver port: on SIGTERM the server stops
accepting, refuses queries that arrive, lets running ones finish, and exits
0 with everything checkpointed."""
import signal
import threading
import time

import pytest
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlDriverError, ReqlOpFailedError

from conftest import Server

r = RethinkDB()

# Long enough (seconds, in a debug build) to still be running when the
# signal lands; the grace period is far longer so it always finishes.
ROWS = 30_000_000


def wait_for(condition, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_running_queries_finish_and_new_ones_are_refused(data_dir):
    server = Server(data_dir, extra_args=["--shutdown-grace", "5m"]).start()
    busy = r.connect(port=server.port)
    idle = r.connect(port=server.port)
    r.db("test").table_create("kept").run(idle)
    r.db("test").table("kept").insert({"id": 1}).run(idle)

    outcome = {}

    def long_query():
        try:
            outcome["count"] = r.range(ROWS).count().run(busy)
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    runner = threading.Thread(target=long_query)
    runner.start()
    time.sleep(0.5)  # let the query start on the server
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "shutting down" in server.log_text())

    # Already connected: a new query is refused, not run.
    with pytest.raises(ReqlOpFailedError, match="shutting down"):
        r.db("test").table("kept").insert({"id": 2}).run(idle)
    # Not connected yet: nobody is listening any more.
    with pytest.raises(ReqlDriverError):
        r.connect(port=server.port, timeout=5)

    runner.join(timeout=300)
    assert outcome == {"count": ROWS}, "the running query finished with its answer"
    assert server.process.wait(timeout=120) == 0
    assert "every running query finished" in server.log_text()

    # The refused insert never happened; what was acknowledged is there.
    server = Server(data_dir, port=server.port).start()
    try:
        connection = r.connect(port=server.port)
        assert sorted(row["id"] for row in r.db("test").table("kept").run(connection)) == [1]
    finally:
        server.stop()
