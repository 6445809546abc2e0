"""The official Python driver against PhotonDB: connect, tables, writes,
reads, cursors, errors."""
import os
import tempfile

import pytest
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlAuthError, ReqlOpFailedError, ReqlQueryLogicError, ReqlNonExistenceError

from conftest import Server

r = RethinkDB()


@pytest.fixture
def connection(server):
    connection = r.connect(port=server.port)
    yield connection
    connection.close()


def test_literals_come_back_as_sent(connection):
    assert r.expr(1).run(connection) == 1
    assert isinstance(r.expr(1.0).run(connection), int), "integral doubles are JSON integers"
    assert r.expr([1, 2.5, "x", None, True]).run(connection) == [1, 2.5, "x", None, True]
    assert r.expr({"a": {"b": [1]}}).run(connection) == {"a": {"b": [1]}}
    assert (r.expr(2) + 3 * 4).run(connection) == 14
    assert r.expr("ab").add("cd").run(connection) == "abcd"
    assert r.expr(1).eq(1).run(connection) is True
    assert r.expr([1, 2]).type_of().run(connection) == "ARRAY"


def test_databases_and_tables(connection):
    assert r.db_list().run(connection) == ["rethinkdb", "test"]
    created = r.db_create("shop").run(connection)
    assert created["dbs_created"] == 1
    assert created["config_changes"][0]["new_val"]["name"] == "shop"
    with pytest.raises(ReqlOpFailedError, match="Database `shop` already exists"):
        r.db_create("shop").run(connection)
    table = r.db("shop").table_create("orders", primary_key="order_id").run(connection)
    assert table["tables_created"] == 1
    assert table["config_changes"][0]["new_val"]["primary_key"] == "order_id"
    assert r.db("shop").table_list().run(connection) == ["orders"]
    configs = list(r.db("rethinkdb").table("table_config").run(connection))
    assert [(config["db"], config["name"], config["primary_key"]) for config in configs] == [("shop", "orders", "order_id")]
    assert r.db("shop").table("orders").config()["name"].run(connection) == "orders"
    assert r.db("shop").table("orders").status()["status"]["ready_for_writes"].run(connection) is True
    with pytest.raises(ReqlOpFailedError, match="is special"):
        r.db_drop("rethinkdb").run(connection)
    dropped = r.db_drop("shop").run(connection)
    assert dropped["dbs_dropped"] == 1 and dropped["tables_dropped"] == 1
    with pytest.raises(ReqlOpFailedError, match="Database `shop` does not exist"):
        r.db("shop").table_list().run(connection)


def test_insert_get_delete(connection):
    r.table_create("people").run(connection)
    people = r.table("people")
    result = people.insert([{"id": i, "name": "n%d" % i} for i in range(10)]).run(connection)
    assert result["inserted"] == 10 and result["errors"] == 0
    duplicate = people.insert({"id": 1, "name": "again"}).run(connection)
    assert duplicate["errors"] == 1
    assert duplicate["first_error"].startswith("Duplicate primary key `id`:")
    assert people.get(1).run(connection) == {"id": 1, "name": "n1"}
    assert people.insert({"id": 1, "name": "replaced"}, conflict="replace").run(connection)["replaced"] == 1
    assert people.insert({"id": 1, "age": 3}, conflict="update").run(connection)["replaced"] == 1
    assert people.get(1).run(connection) == {"id": 1, "name": "replaced", "age": 3}
    generated = people.insert({"name": "anonymous"}).run(connection)
    assert len(generated["generated_keys"]) == 1
    assert people.get(generated["generated_keys"][0])["name"].run(connection) == "anonymous"
    assert people.get(999).run(connection) is None
    assert people.get(2).delete().run(connection)["deleted"] == 1
    assert people.get(2).delete().run(connection)["skipped"] == 1
    assert people.count().run(connection) == 10
    changes = people.insert({"id": 50}, return_changes=True).run(connection)["changes"]
    assert changes == [{"new_val": {"id": 50}, "old_val": None}]


def test_cursor_reads_a_table_in_batches(connection):
    r.table_create("numbers").run(connection)
    r.table("numbers").insert([{"id": i} for i in range(1000)]).run(connection)
    cursor = r.table("numbers").run(connection, max_batch_rows=7)
    ids = [row["id"] for row in cursor]
    assert sorted(ids) == list(range(1000))
    assert ids == sorted(ids), "a table reads in primary key order"


def test_errors_carry_rethinkdb_types_and_messages(connection):
    with pytest.raises(ReqlOpFailedError, match="Table `test.missing` does not exist"):
        r.table("missing").run(connection)
    with pytest.raises(ReqlQueryLogicError, match="Cannot divide by zero"):
        (r.expr(1) / 0).run(connection)
    with pytest.raises(ReqlNonExistenceError, match="No attribute `b` in object"):
        r.expr({"a": 1})["b"].run(connection)
    with pytest.raises(ReqlQueryLogicError, match="Primary keys must be either"):
        r.table_create("keys").run(connection)
        r.table("keys").get({"object": 1}).run(connection)
    # The connection is still usable after errors.
    assert r.expr("still here").run(connection) == "still here"


def test_admin_password_is_checked(data_dir):
    server = Server(data_dir, password="s3cret").start()
    try:
        with pytest.raises(ReqlAuthError):
            r.connect(port=server.port, password="wrong")
        with pytest.raises(ReqlAuthError):
            r.connect(port=server.port, user="nobody", password="s3cret")
        connection = r.connect(port=server.port, password="s3cret")
        assert r.expr(1).run(connection) == 1
        connection.close()
    finally:
        server.stop()


def test_data_survives_a_clean_restart(data_dir):
    server = Server(data_dir).start()
    connection = r.connect(port=server.port)
    r.table_create("kept").run(connection)
    r.table("kept").insert({"id": "a", "value": 1}).run(connection)
    connection.close()
    server.stop()
    server = Server(data_dir, port=server.port).start()
    connection = r.connect(port=server.port)
    assert r.table("kept").get("a").run(connection) == {"id": "a", "value": 1}
    connection.close()
    server.stop()


def test_a_relative_data_directory_works(data_dir):
    """The README's command uses the default `./photondb_data`, relative to
    where the server starts."""
    server = Server("photondb_data", cwd=data_dir).start()
    connection = r.connect(port=server.port)
    r.table_create("here").run(connection)
    connection.close()
    server.stop()
    assert os.path.isdir(os.path.join(data_dir, "photondb_data", "partition-0000"))


def test_a_second_server_on_a_taken_port_refuses_to_start(server):
    """Shards share their port with SO_REUSEPORT; that must not let another
    server of the same user share it too and take half the connections."""
    with tempfile.TemporaryDirectory() as other_dir:
        with pytest.raises(RuntimeError, match="another server is listening on this port"):
            Server(other_dir, port=server.port).start()
    connection = r.connect(port=server.port)
    assert r.expr(1).run(connection) == 1
    connection.close()


def test_concurrent_updates_of_one_document_lose_nothing(server):
    """update() is atomic per document: increments from many connections
    at once all count."""
    import threading
    setup = r.connect(port=server.port)
    r.table_create("counters").run(setup)
    r.table("counters").insert({"id": "hits", "n": 0}).run(setup)
    errors = []

    def bump():
        connection = r.connect(port=server.port)
        try:
            for _ in range(40):
                result = r.table("counters").get("hits").update({"n": r.row["n"] + 1}).run(connection)
                assert result["replaced"] == 1, result
        except Exception as error:  # collected and asserted below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert r.table("counters").get("hits")["n"].run(setup) == 8 * 40
    # The same through a selection of the whole table.
    r.table("counters").update({"n": r.row["n"] * 2}).run(setup)
    assert r.table("counters").get("hits")["n"].run(setup) == 8 * 40 * 2
    setup.close()


def test_counts_over_many_rows_see_each_row_once(server):
    """Partition scans stop every few thousand rows (to let other queries
    run) and whenever enough rows need the interpreter, then resume: each
    row must still count once. Every tenth row lacks `k`, so the compiled
    filter hands it to the interpreter."""
    connection = r.connect(port=server.port)
    r.table_create("many").run(connection)
    table = r.table("many")
    rows = [{"id": n} if n % 10 == 0 else {"id": n, "k": n % 7} for n in range(60000)]
    for first in range(0, len(rows), 10000):
        table.insert(rows[first:first + 10000], durability="soft").run(connection)
    assert table.count().run(connection) == 60000
    expected = sum(1 for row in rows if row.get("k") == 3)
    assert table.filter(r.row["k"] == 3).count().run(connection) == expected
    assert table.filter(lambda row: row["k"].default(3) == 3).count().run(connection) == expected + 6000
    groups = table.group("k").count().run(connection)
    assert groups[None] == 6000
    assert sum(groups.values()) == 60000
    connection.close()


def test_point_writes_report_the_row_they_changed(server):
    """get(key).update/replace/delete run on the shard owning the row
    without reading it first: results and changes must still be the row's."""
    connection = r.connect(port=server.port)
    r.table_create("points").run(connection)
    table = r.table("points")
    table.insert([{"id": n, "n": n} for n in range(20)]).run(connection)
    for n in range(20):
        changed = table.get(n).update({"n": r.row["n"] + 100}, return_changes=True).run(connection)
        assert changed["replaced"] == 1
        assert changed["changes"] == [{"old_val": {"id": n, "n": n}, "new_val": {"id": n, "n": n + 100}}]
    assert table.get(99).update({"n": 1}).run(connection)["skipped"] == 1
    assert table.get(3).replace({"id": 3}).run(connection)["replaced"] == 1
    assert table.get(3).replace({"id": 3}).run(connection)["unchanged"] == 1
    refused = table.get(4).replace({"id": 5}).run(connection)
    assert refused["errors"] == 1 and "Primary key `id` cannot be changed" in refused["first_error"]
    for n in range(20):
        removed = table.get(n).delete(return_changes=True).run(connection)
        assert removed["deleted"] == 1
        assert removed["changes"][0]["new_val"] is None
        assert removed["changes"][0]["old_val"]["id"] == n
    assert table.get(0).delete().run(connection)["skipped"] == 1
    assert table.count().run(connection) == 0
    connection.close()


def test_point_reads_answer_as_evaluated_reads_do(connection):
    """A plain table.get(key) is answered from the stored document without
    evaluating a term; it must read as the same get evaluated (wrapped in
    `default`, which takes the general path), for every kind of value, key
    and table form, and fail as the general path fails."""
    r.db_create("points").run(connection)
    r.db("points").table_create("kinds", primary_key="key").run(connection)
    table = r.db("points").table("kinds")
    documents = [
        {"key": 1, "n": 1.5, "whole": 2.0, "big": 2 ** 60, "negative": -3, "tiny": 1e-300},
        {"key": "text", "quote": 'say "hi"\\', "control": "a\u0001\n\t", "unicode": "é€😀", "empty": ""},
        {"key": ["compound", 2], "nested": {"a": [1, {"b": None}], "c": {}}, "list": [], "flag": False},
        {"key": True, "when": r.epoch_time(1234567890.123), "zone": r.time(2020, 5, 6, "-07:00"),
         "data": r.binary(b"\x00\x01\xff")},
        {"key": -0.5, "many": {("field%02d" % n): "x" * n for n in range(40)}},
    ]
    assert table.insert(documents).run(connection)["inserted"] == len(documents)
    for document in documents:
        key = document["key"]
        fast = table.get(key).run(connection)
        evaluated = table.get(key).default(None).run(connection)
        assert fast == evaluated
        assert fast["key"] == key
    assert table.get(1).run(connection)["big"] == 2 ** 60
    assert isinstance(table.get(1).run(connection)["whole"], int), "integral doubles are JSON integers"
    assert table.get("text").run(connection) == documents[1]
    assert table.get(True).run(connection)["data"] == b"\x00\x01\xff"
    assert table.get("missing").run(connection) is None
    # The default database's form of the same read.
    r.table_create("plain").run(connection)
    r.table("plain").insert({"id": "a", "v": 1}).run(connection)
    assert r.table("plain").get("a").run(connection) == {"id": "a", "v": 1}
    assert r.db("test").table("plain").get("a").run(connection) == {"id": "a", "v": 1}
    with pytest.raises(ReqlOpFailedError, match="Table `points.nope` does not exist"):
        r.db("points").table("nope").get(1).run(connection)
    with pytest.raises(ReqlOpFailedError, match="Database `nope` does not exist"):
        r.db("nope").table("kinds").get(1).run(connection)
    with pytest.raises(ReqlQueryLogicError, match="Primary keys must be either"):
        table.get(None).run(connection)
    # System tables are read by the general path.
    assert r.db("rethinkdb").table("db_config").get("no such id").run(connection) is None


def test_users_live_in_the_catalog_and_survive_restarts(data_dir):
    server = Server(data_dir, password="first").start()
    connection = r.connect(port=server.port, password="first")
    users = r.db("rethinkdb").table("users")
    assert list(users.run(connection)) == [{"id": "admin", "password": True}]
    assert users.get("admin").update({"password": "second"}).run(connection)["replaced"] == 1
    assert users.insert({"id": "bob", "password": "builder"}).run(connection)["inserted"] == 1
    connection.close()
    server.stop()
    # --initial-password applies to a new data directory only.
    server = Server(data_dir, port=server.port, password="ignored").start()
    with pytest.raises(ReqlAuthError):
        r.connect(port=server.port, password="first")
    with pytest.raises(ReqlAuthError):
        r.connect(port=server.port, password="ignored")
    connection = r.connect(port=server.port, password="second")
    assert sorted(row["id"] for row in r.db("rethinkdb").table("users").run(connection)) == ["admin", "bob"]
    connection.close()
    bob = r.connect(port=server.port, user="bob", password="builder")
    assert r.expr(1).run(bob) == 1
    bob.close()
    server.stop()


def test_table_configuration_changes_are_durable(data_dir):
    server = Server(data_dir).start()
    try:
        connection = r.connect(port=server.port)
        r.table_create("logs").run(connection)
        r.table("logs").insert({"id": 1}).run(connection)
        renamed = r.table("logs").config().update({"name": "events", "durability": "soft"}).run(connection)
        assert renamed["replaced"] == 1
        reconfigured = r.table("events").reconfigure(shards=3, replicas=1).run(connection)
        assert reconfigured["reconfigured"] == 1
        assert len(reconfigured["config_changes"][0]["new_val"]["shards"]) == 3
        with pytest.raises(ReqlOpFailedError, match="only 1 servers with the tag `default`"):
            r.table("events").reconfigure(shards=1, replicas=2).run(connection)
        with pytest.raises(ReqlOpFailedError, match="cannot be changed"):
            r.table("events").config().update({"primary_key": "other"}).run(connection)
        permissions = list(r.db("rethinkdb").table("permissions").run(connection))
        assert permissions == [{"id": ["admin"], "user": "admin",
                                "permissions": {"config": True, "connect": True, "read": True, "write": True}}]
    finally:
        server.stop()
    server = Server(data_dir, port=server.port).start()
    try:
        connection = r.connect(port=server.port)
        assert r.table_list().run(connection) == ["events"]
        config = r.table("events").config().run(connection)
        assert (config["durability"], len(config["shards"])) == ("soft", 3)
        assert r.table("events").get(1).run(connection) == {"id": 1}
    finally:
        server.stop()


def test_filtered_counts_over_every_partition(connection):
    # Counted on each partition's own core and summed; the answers must be
    # those of the rows themselves, missing fields and `default` included.
    r.table_create("counted").run(connection)
    rows = [{"id": i, "n": i % 10} if i % 7 else {"id": i} for i in range(2000)]
    r.table("counted").insert(rows).run(connection)
    table = r.table("counted")
    assert table.filter(lambda row: row["n"] > 5).count().run(connection) == sum(1 for row in rows if row.get("n", -1) > 5)
    assert table.filter(lambda row: row["n"] > 5, default=True).count().run(connection) == sum(
        1 for row in rows if "n" not in row or row["n"] > 5)
    assert table.filter({"n": 3}).count().run(connection) == sum(1 for row in rows if row.get("n") == 3)
    assert table.between(100, 200).filter(r.row["n"].eq(0)).count().run(connection) == sum(
        1 for row in rows if 100 <= row["id"] < 200 and row.get("n") == 0)
    with pytest.raises(ReqlQueryLogicError):
        table.filter(lambda row: row["n"] + "x").count().run(connection)


def test_grouped_reductions_over_every_partition(connection):
    # Reduced per group on each partition's core, then merged; compared with
    # the same reductions done here, and beyond array_limit per group.
    r.table_create("grouped").run(connection)
    rows = [{"id": i, "k": i % 3, "v": i % 11, "tags": ["a", "b"] if i % 2 else ["a"]} for i in range(3000)]
    rows += [{"id": 5000 + i, "k": 9} for i in range(10)]  # a group with no `v`
    r.table("grouped").insert(rows).run(connection)
    table = r.table("grouped")
    by_key = {}
    for row in rows:
        by_key.setdefault(row["k"], []).append(row)
    assert table.group("k").count().run(connection) == {key: len(members) for key, members in by_key.items()}
    assert table.group("k").sum("v").run(connection) == {
        key: sum(row["v"] for row in members) for key, members in by_key.items() if any("v" in row for row in members)}
    averages = table.group("k").avg("v").run(connection)
    assert averages.keys() == {0, 1, 2} and abs(averages[1] - sum(row["v"] for row in by_key[1]) / len(by_key[1])) < 1e-9
    assert table.group("k").max("v").run(connection)[0]["v"] == 10
    assert table.group("k").min("v").run(connection)[0] == {"id": 0, "k": 0, "v": 0, "tags": ["a"]}
    assert table.filter(r.row["v"] > 5).group("k").count().run(connection) == {
        key: sum(1 for row in members if row.get("v", 0) > 5) for key, members in by_key.items() if key != 9}
    assert table.group("tags", multi=True).count().run(connection) == {"a": 3000, "b": 1500, None: 10}
    assert table.group("k").count(lambda row: row["v"].eq(3)).run(connection) == {
        key: sum(1 for row in members if row.get("v") == 3) for key, members in by_key.items() if key != 9}
    assert table.group("k").count().run(connection, array_limit=100)[0] == 1000
