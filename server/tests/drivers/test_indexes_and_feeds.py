"""Secondary indexes and changefeeds through the official Python driver,
against a real server: index reads agree with full scans, indexes survive
restarts and kill -9, and changefeeds deliver every change from any core."""
import threading

import pytest
from rethinkdb.errors import ReqlQueryLogicError

from rethinkdb import RethinkDB

from conftest import Server

r = RethinkDB()


def by_filter(connection, table, field, value):
    return sorted(row["id"] for row in r.table(table).filter({field: value}).run(connection))


def by_index(connection, table, index, value):
    return sorted(row["id"] for row in r.table(table).get_all(value, index=index).run(connection))


def test_index_built_over_existing_rows_agrees_with_scans(server):
    connection = r.connect(port=server.port)
    r.table_create("people").run(connection)
    people = [{"id": i, "city": "c%d" % (i % 7), "age": i % 90, "tags": ["t%d" % (i % 3), "t%d" % (i % 5)]} for i in range(3000)]
    r.table("people").insert(people).run(connection)
    assert r.table("people").index_create("city").run(connection) == {"created": 1}
    assert r.table("people").index_create("tags", multi=True).run(connection) == {"created": 1}
    assert r.table("people").index_create("age_city", [r.row["age"], r.row["city"]]).run(connection) == {"created": 1}
    statuses = r.table("people").index_wait().run(connection)
    assert all(status["ready"] for status in statuses)
    for city in ("c0", "c3", "c6", "nowhere"):
        assert by_index(connection, "people", "city", city) == by_filter(connection, "people", "city", city)
    tagged = sorted(row["id"] for row in r.table("people").get_all("t4", index="tags").run(connection))
    assert tagged == [person["id"] for person in people if "t4" in person["tags"]]
    # A range through a compound index, in index order.
    rows = list(r.table("people").between([10, r.minval], [12, r.maxval], index="age_city").order_by(index="age_city").run(connection))
    expected = sorted((person for person in people if 10 <= person["age"] <= 12), key=lambda person: (person["age"], person["city"], person["id"]))
    assert [row["id"] for row in rows] == [person["id"] for person in expected]
    # The top of an index without sorting the table, both ways.
    assert [row["age"] for row in r.table("people").order_by(index=r.desc("age_city")).limit(3).run(connection)] == [89, 89, 89]
    assert r.table("people").between(20, 30, index="age_city").count().run(connection) == 0  # arrays sort after numbers
    assert r.table("people").between([20], [30], index="age_city").count().run(connection) == sum(1 for p in people if 20 <= p["age"] < 30)
    # The distinct keys of an index, in index order.
    assert list(r.table("people").distinct(index="city").run(connection)) == ["c%d" % i for i in range(7)]
    assert list(r.table("people").distinct(index="tags").run(connection)) == ["t%d" % i for i in range(5)]
    # Writes keep every index in step.
    r.table("people").get(5).update({"city": "moved", "tags": ["t9"]}).run(connection)
    r.table("people").get(6).delete().run(connection)
    assert by_index(connection, "people", "city", "moved") == [5]
    assert 6 not in by_index(connection, "people", "city", "c6")
    assert by_index(connection, "people", "tags", "t9") == [5]
    assert 5 not in by_index(connection, "people", "tags", "t0")


def test_indexes_survive_restart_and_kill(data_dir):
    server = Server(data_dir).start()
    connection = r.connect(port=server.port)
    r.table_create("orders").run(connection)
    r.table("orders").index_create("customer").run(connection)
    r.table("orders").index_wait().run(connection)
    r.table("orders").insert([{"id": i, "customer": i % 10} for i in range(500)]).run(connection)
    connection.close()
    server.stop()

    server = Server(data_dir, port=server.port).start()
    connection = r.connect(port=server.port)
    assert r.table("orders").index_list().run(connection) == ["customer"]
    assert by_index(connection, "orders", "customer", 3) == list(range(3, 500, 10))
    # Acknowledged hard writes after the restart, then kill -9.
    r.table("orders").get(3).update({"customer": 42}).run(connection)
    r.table("orders").insert({"id": 1000, "customer": 42}).run(connection)
    server.kill()

    server = Server(data_dir, port=server.port).start()
    connection = r.connect(port=server.port)
    assert by_index(connection, "orders", "customer", 42) == [3, 1000]
    assert 3 not in by_index(connection, "orders", "customer", 3)
    for customer in range(10):
        assert by_index(connection, "orders", "customer", customer) == by_filter(connection, "orders", "customer", customer)
    connection.close()
    server.stop()


def test_changefeeds_see_writes_from_every_connection_in_order(server):
    reader = r.connect(port=server.port)
    r.table_create("events").run(reader)
    feed = r.table("events").changes().run(reader)
    point = r.table("events").get("k0").changes(include_initial=True).run(reader)
    assert point.next(wait=5) == {"new_val": None}

    def write(writer_index):
        connection = r.connect(port=server.port)
        for sequence in range(50):
            key = "k%d" % (sequence % 5)
            r.table("events").insert({"id": key, "writer": writer_index, "sequence": sequence}, conflict="replace").run(connection)
        connection.close()

    writers = [threading.Thread(target=write, args=(index,)) for index in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()

    changes = [feed.next(wait=10) for _ in range(200)]
    # Every write is one change; per document, each change starts where the
    # previous one ended (commit order).
    last_by_key = {}
    for change in changes:
        key = change["new_val"]["id"]
        assert change["old_val"] == last_by_key.get(key)
        last_by_key[key] = change["new_val"]
    final = {row["id"]: row for row in r.table("events").run(reader)}
    assert last_by_key == final
    point_changes = [point.next(wait=10) for _ in range(40)]
    assert all(change["new_val"]["id"] == "k0" for change in point_changes)
    assert point_changes[-1]["new_val"] == final["k0"]
    feed.close()
    point.close()
    # The connection is still usable after closing feeds.
    assert r.table("events").count().run(reader) == 5


def test_feed_filters_and_overflow(server):
    connection = r.connect(port=server.port)
    r.table_create("metrics").run(connection)
    hot = r.table("metrics").filter(r.row["value"] > 90).pluck("id", "value").changes(include_types=True).run(connection)
    small = r.table("metrics").changes(changefeed_queue_size=10).run(connection)
    r.table("metrics").insert([{"id": i, "value": i, "other": "x"} for i in range(100)]).run(connection)
    seen = [hot.next(wait=10) for _ in range(9)]
    assert sorted(change["new_val"]["value"] for change in seen) == list(range(91, 100))
    assert all(change["type"] == "add" and change["new_val"].keys() == {"id", "value"} for change in seen)
    r.table("metrics").get(95).update({"value": 5}).run(connection)
    assert hot.next(wait=10) == {"old_val": {"id": 95, "value": 95}, "new_val": None, "type": "remove"}
    items = [small.next(wait=10) for _ in range(11)]
    errors = [item for item in items if "error" in item]
    assert errors and "Changefeed cache over array size limit, skipped" in errors[0]["error"]


def test_order_by_limit_feeds_with_offsets(server):
    connection = r.connect(port=server.port)
    r.table_create("scores").run(connection)
    r.table("scores").index_create("points").run(connection)
    r.table("scores").index_wait().run(connection)
    r.table("scores").insert([{"id": i, "points": i * 10} for i in range(5)]).run(connection)
    top = r.table("scores").order_by(index=r.desc("points")).limit(3)
    feed = top.changes(include_initial=True, include_offsets=True).run(connection)
    initial = [feed.next(wait=10) for _ in range(3)]
    assert [(change["new_val"]["id"], change["new_offset"]) for change in initial] == [(4, 0), (3, 1), (2, 2)]
    # A new leader: everyone moves down, the last one leaves.
    r.table("scores").insert({"id": 9, "points": 100}).run(connection)
    change = feed.next(wait=10)
    assert change["old_val"]["id"] == 2 and change["old_offset"] == 2
    assert change["new_val"]["id"] == 9 and change["new_offset"] == 0
    # A row changing in place keeps its place.
    r.table("scores").get(3).update({"note": "x"}).run(connection)
    change = feed.next(wait=10)
    assert (change["old_offset"], change["new_offset"]) == (2, 2) and change["new_val"]["note"] == "x"
    feed.close()
    # Offsets only exist for order_by.limit feeds.
    with pytest.raises(ReqlQueryLogicError, match="Cannot include offsets for range subscriptions."):
        r.table("scores").changes(include_offsets=True).run(connection)


def test_distinct_index_values_of_a_table_slice(server):
    connection = r.connect(port=server.port)
    r.table_create("slices").run(connection)
    table = r.table("slices")
    table.index_create("a").run(connection)
    table.index_create("b").run(connection)
    table.index_wait().run(connection)
    table.insert([{"id": i, "a": i % 4, "b": (i * 7) % 5} for i in range(40)]).run(connection)
    rows = [{"id": i, "a": i % 4, "b": (i * 7) % 5} for i in range(40)]
    in_slice = [row for row in rows if 1 <= row["a"] < 3]
    assert list(table.between(1, 3, index="a").distinct(index="b").run(connection)) == \
        sorted({row["b"] for row in in_slice})
    assert list(table.between(1, 3, index="a").distinct(index="id").run(connection)) == \
        sorted(row["id"] for row in in_slice)
    assert table.between(1, 3, index="a").distinct(index="id").count().run(connection) == len(in_slice)


def test_union_of_changefeeds(server):
    connection = r.connect(port=server.port)
    writer = r.connect(port=server.port)
    for name in ("left", "right"):
        r.table_create(name).run(connection)
    r.table("left").insert({"id": 0}).run(connection)
    feed = r.table("left").changes(include_initial=True).union(
        r.table("right").filter(r.row["keep"]).changes()).run(connection)
    assert feed.next(wait=10) == {"new_val": {"id": 0}}
    r.table("right").insert([{"id": 1, "keep": False}, {"id": 2, "keep": True}]).run(writer)
    r.table("left").insert({"id": 3}).run(writer)
    changes = [feed.next(wait=10) for _ in range(2)]
    assert sorted(change["new_val"]["id"] for change in changes) == [2, 3]
    assert all(change["old_val"] is None for change in changes)
    feed.close()
    # Drivers pick the cursor class by the response note: UNIONED_FEED (4).
    import json
    import struct
    from test_protocol_errors import read_frame
    raw = r.connect(port=server.port)
    sock = raw._instance._socket._socket
    left, right = [15, [[14, ["test"]], "left"]], [15, [[14, ["test"]], "right"]]
    term = [44, [[152, [left]], [152, [right]]]]  # left.changes().union(right.changes())
    body = json.dumps([1, term, {}]).encode()
    sock.sendall(struct.pack("<QI", 77, len(body)) + body)
    token, reply = read_frame(sock)
    assert token == 77 and reply["t"] == 3 and reply["n"] == [4], reply
    with pytest.raises(ReqlQueryLogicError, match="Cannot union a changefeed with"):
        r.table("left").changes().union([1, 2]).run(connection)
