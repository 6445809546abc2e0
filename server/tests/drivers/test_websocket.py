"""The WebSocket API (`/api/v1/ws`) with a real client: many queries on one
socket, cursors with CONTINUE and STOP, a changefeed pushed as writes
happen, and malformed messages."""
import asyncio
import json

import websockets
from rethinkdb import RethinkDB

r = RethinkDB()

TEST_TABLE = [15, [[14, ["test"]], "ws"]]


async def receive(socket, token):
    """The next message for `token` (messages of other tokens are kept)."""
    while True:
        if token in receive.waiting and receive.waiting[token]:
            return receive.waiting[token].pop(0)
        message = json.loads(await asyncio.wait_for(socket.recv(), timeout=10))
        receive.waiting.setdefault(message.get("token"), []).append(message)


receive.waiting = {}


async def wait_on_a_feed(socket):
    """Starts a changefeed of the test table as token 1 and asks for its
    changes, leaving the server waiting for some."""
    receive.waiting = {}
    await socket.send(json.dumps({"token": 1, "query": [152, [TEST_TABLE]]}))
    await receive(socket, 1)
    await socket.send(json.dumps({"token": 1, "type": "CONTINUE"}))


def test_queries_cursors_and_a_changefeed_over_one_socket(server):
    connection = r.connect(port=server.port)
    r.table_create("ws").run(connection)
    r.table("ws").insert([{"id": i} for i in range(10)]).run(connection)

    async def scenario():
        receive.waiting = {}
        async with websockets.connect("ws://127.0.0.1:%d/api/v1/ws" % server.http_port) as socket:
            # An atom and a cursor at once; the cursor in batches of 4.
            await socket.send(json.dumps({"token": 1, "query": [24, [1, 2]]}))
            await socket.send(json.dumps({"token": 2, "query": TEST_TABLE, "optargs": {"max_batch_rows": 4}}))
            atom = await receive(socket, 1)
            assert (atom["t"], atom["r"]) == (1, [3])
            rows = []
            while True:
                batch = await receive(socket, 2)
                rows.extend(row["id"] for row in batch["r"])
                if batch["t"] == 2:
                    break
                assert batch["t"] == 3
                await socket.send(json.dumps({"token": 2, "type": "CONTINUE"}))
            assert rows == list(range(10))

            # A changefeed: its first answer comes at once, then changes as
            # they happen on another connection.
            await socket.send(json.dumps({"token": 3, "query": [152, [TEST_TABLE]]}))
            first = await receive(socket, 3)
            assert (first["t"], first["r"], first["n"]) == (3, [], [1])
            await socket.send(json.dumps({"token": 3, "type": "CONTINUE"}))
            r.table("ws").get(4).update({"seen": True}).run(connection)
            change = await receive(socket, 3)
            assert change["t"] == 3
            assert change["r"] == [{"old_val": {"id": 4}, "new_val": {"id": 4, "seen": True}}]
            # STOP ends the waiting feed.
            await socket.send(json.dumps({"token": 3, "type": "CONTINUE"}))
            await socket.send(json.dumps({"token": 3, "type": "STOP"}))
            stopped = await receive(socket, 3)
            assert stopped["t"] == 2

            # Errors: RethinkDB's response types and messages.
            await socket.send(json.dumps({"token": 4, "query": [15, [[14, ["test"]], "missing"]]}))
            error = await receive(socket, 4)
            assert error["t"] == 18 and error["r"] == ["Table `test.missing` does not exist."]
            await socket.send("{not json")
            malformed = await receive(socket, None)
            assert malformed["t"] == 16 and "Malformed JSON" in malformed["r"][0]
            await socket.send(json.dumps({"token": 9, "type": "CONTINUE"}))
            unknown = await receive(socket, 9)
            assert unknown["t"] == 16 and unknown["r"] == ["Token 9 not in stream cache."]

    asyncio.run(scenario())
    # A socket closed with a feed open leaves the server serving.
    assert r.table("ws").count().run(connection) == 10


def test_a_feed_on_a_closed_socket_is_released(server):
    connection = r.connect(port=server.port)
    r.table_create("ws").run(connection)

    async def open_and_leave():
        async with websockets.connect("ws://127.0.0.1:%d/api/v1/ws" % server.http_port) as socket:
            await wait_on_a_feed(socket)

    asyncio.run(open_and_leave())
    # The feed's subscription goes once a change shows its task the socket
    # is gone; afterwards the metrics count no subscriber.
    r.table("ws").insert({"id": 1}).run(connection)
    import time
    import urllib.request
    deadline = time.time() + 10
    while True:
        text = urllib.request.urlopen("http://127.0.0.1:%d/_metrics" % server.http_port).read().decode()
        if "photondb_changefeed_subscribers 0" in text or time.time() > deadline:
            break
        time.sleep(0.1)
    assert "photondb_changefeed_subscribers 0" in text


def test_sockets_are_closed_cleanly_at_shutdown(server):
    import signal

    connection = r.connect(port=server.port)
    r.table_create("ws").run(connection)

    async def scenario():
        async with websockets.connect("ws://127.0.0.1:%d/api/v1/ws" % server.http_port) as socket:
            await wait_on_a_feed(socket)
            server.process.send_signal(signal.SIGTERM)
            try:
                while True:
                    await asyncio.wait_for(socket.recv(), timeout=15)
            except websockets.ConnectionClosedOK as closed:
                return closed.rcvd.code, closed.rcvd.reason

    assert asyncio.run(scenario()) == (1001, "the server is shutting down")
    assert server.process.wait(timeout=60) == 0
