"""The `photondb` CLI against a real server: databases, tables, indexes,
queries, import/export in every format, dump/restore of a whole dataset,
and one-line errors with a non-zero exit."""
import csv
import json
import os
import subprocess

from rethinkdb import RethinkDB

from conftest import BINARY, Server

r = RethinkDB()


def photondb(server, *arguments, check=True, password=""):
    result = subprocess.run(
        [BINARY, *arguments], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PHOTONDB_PORT=str(server.port), PHOTONDB_PASSWORD=password),
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_databases_tables_and_indexes(server):
    photondb(server, "db", "create", "app")
    assert json.loads(photondb(server, "db", "list", "--format", "json").stdout) == [
        {"name": "app"}, {"name": "rethinkdb"}, {"name": "test"}]
    assert photondb(server, "db", "list").stdout.split() == ["NAME", "app", "rethinkdb", "test"]
    photondb(server, "table", "create", "people", "--db", "app", "--primary-key", "email", "--durability", "soft")
    tables = json.loads(photondb(server, "table", "list", "--db", "app", "--format", "json").stdout)
    assert tables == [{"name": "people", "primary_key": "email", "durability": "soft", "documents": 0, "indexes": ""}]
    photondb(server, "index", "create", "by_age", "--db", "app", "--table", "people", "--field", "age")
    photondb(server, "index", "create", "tags", "--db", "app", "--table", "people", "--multi")
    listing = photondb(server, "index", "list", "--db", "app", "--table", "people").stdout.splitlines()
    assert listing[0].split() == ["INDEX", "READY", "MULTI", "GEO"]
    assert [line.split() for line in listing[1:]] == [["by_age", "true", "false", "false"], ["tags", "true", "true", "false"]]

    connection = r.connect(port=server.port)
    r.db("app").table("people").insert([{"email": "a@x", "age": 30, "tags": ["x", "y"]}, {"email": "b@x", "age": 40}]).run(connection)
    assert [d["email"] for d in r.db("app").table("people").get_all(30, index="by_age").run(connection)] == ["a@x"]
    assert [d["email"] for d in r.db("app").table("people").get_all("y", index="tags").run(connection)] == ["a@x"]

    # A query as wire JSON: an atom prints as JSON, a sequence a row a line.
    count = photondb(server, "query", json.dumps([43, [[15, [[14, ["app"]], "people"]]]]))
    assert json.loads(count.stdout) == 2
    rows = photondb(server, "query", json.dumps([15, [[14, ["app"]], "people"]])).stdout.splitlines()
    assert sorted(json.loads(row)["email"] for row in rows) == ["a@x", "b@x"]

    photondb(server, "index", "drop", "tags", "--db", "app", "--table", "people")
    photondb(server, "table", "drop", "people", "--db", "app")
    photondb(server, "db", "drop", "app")
    assert r.db_list().run(connection) == ["rethinkdb", "test"]
    connection.close()


def test_errors_are_one_line_with_a_non_zero_exit(server):
    cases = [
        (["db", "drop", "missing"], "ReqlOpFailedError: Database `missing` does not exist."),
        (["query", "{not json"], "the query is not JSON"),
        (["table", "list", "--db", "missing"], "Database `missing` does not exist."),
        (["export", "--table", "test.none", "--format", "csv"], "a CSV export needs --fields"),
    ]
    for arguments, message in cases:
        result = photondb(server, *arguments, check=False)
        assert result.returncode == 1, arguments
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    result = photondb(server, "db", "list", "--port", "1", check=False)
    assert result.returncode == 1 and result.stderr.startswith("photondb: cannot reach 127.0.0.1:1")


def test_a_wrong_password_is_refused(data_dir):
    server = Server(data_dir, password="s3cret").start()
    try:
        assert photondb(server, "db", "list", password="s3cret").returncode == 0
        result = photondb(server, "db", "list", password="wrong", check=False)
        assert result.returncode == 1 and "ReqlAuthError" in result.stderr
    finally:
        server.stop()


PEOPLE = [
    {"id": i, "name": "person %d" % i, "age": i % 90, "tags": ["t%d" % (i % 7)], "nested": {"deep": [i, {"x": None}]}}
    for i in range(2345)
]


def test_import_and_export_round_trip_every_format(server, tmp_path):
    source = tmp_path / "people.json"
    source.write_text(json.dumps(PEOPLE))
    photondb(server, "import", str(source), "--table", "test.people", "--batch-size", "100")
    connection = r.connect(port=server.port)
    assert sorted(r.table("people").run(connection), key=lambda d: d["id"]) == PEOPLE

    for extension in ["json", "ndjson"]:
        exported = tmp_path / ("out." + extension)
        photondb(server, "export", "--table", "people", "-o", str(exported))
        text = exported.read_text()
        documents = json.loads(text) if extension == "json" else [json.loads(line) for line in text.splitlines()]
        assert sorted(documents, key=lambda d: d["id"]) == PEOPLE
        # Re-importing the export into a new table gives the same table.
        photondb(server, "import", str(exported), "--table", "copy_" + extension)
        assert sorted(r.table("copy_" + extension).run(connection), key=lambda d: d["id"]) == PEOPLE

    # CSV: the chosen columns; every value comes back as a string.
    exported = tmp_path / "out.csv"
    photondb(server, "export", "--table", "people", "-o", str(exported), "--fields", "id,name,age")
    with open(exported, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((int(row["id"]), row["name"], int(row["age"])) for row in rows) == [(p["id"], p["name"], p["age"]) for p in PEOPLE]
    photondb(server, "import", str(exported), "--table", "from_csv")
    assert r.table("from_csv").get("17").run(connection) == {"id": "17", "name": "person 17", "age": "17"}

    # Duplicates: an error by default (exit 1, counted), replaced on request.
    changed = tmp_path / "changed.ndjson"
    changed.write_text("\n".join(json.dumps({"id": i, "name": "changed"}) for i in range(10)) + "\n")
    result = photondb(server, "import", str(changed), "--table", "people", check=False)
    assert result.returncode == 1 and "10 documents were not imported" in result.stderr
    assert "Duplicate primary key" in result.stderr and result.stderr.count("\n") == 2
    photondb(server, "import", str(changed), "--table", "people", "--conflict", "update")
    assert r.table("people").get(3).run(connection)["name"] == "changed"
    assert r.table("people").get(3).run(connection)["age"] == 3

    # Broken input is an error that says where, and nothing half-parsed lands.
    broken = tmp_path / "broken.ndjson"
    broken.write_text('{"id": "ok"}\n{"id": \n')
    result = photondb(server, "import", str(broken), "--table", "broken", check=False)
    assert result.returncode == 1 and "line 2 is not JSON" in result.stderr
    connection.close()


def test_dump_and_restore_a_whole_dataset(server, tmp_path):
    connection = r.connect(port=server.port)
    r.db_create("shop").run(connection)
    r.db("shop").table_create("orders", primary_key="number").run(connection)
    r.db("shop").table_create("empty").run(connection)
    orders = [{"number": i, "customer": "c%d" % (i % 13), "items": ["i%d" % (i % 5), "j"], "at": r.epoch_time(1700000000 + i),
               "blob": r.binary(bytes([i % 256, 0, 255]))} for i in range(1500)]
    r.db("shop").table("orders").insert(orders).run(connection)
    r.db("shop").table("orders").index_create("customer").run(connection)
    r.db("shop").table("orders").index_create("items", multi=True).run(connection)
    r.db("shop").table("orders").index_create("total", lambda row: row["number"] * 2).run(connection)
    r.db("shop").table("orders").index_wait().run(connection)
    r.table_create("notes").run(connection)
    r.table("notes").insert({"id": "n", "text": "kept"}).run(connection)
    before = sorted(r.db("shop").table("orders").run(connection), key=lambda d: d["number"])

    archive = tmp_path / "backup.tar.gz"
    photondb(server, "dump", "-o", str(archive))
    r.db_drop("shop").run(connection)
    r.table_drop("notes").run(connection)

    photondb(server, "restore", str(archive))
    assert sorted(r.db("shop").table_list().run(connection)) == ["empty", "orders"]
    assert r.db("shop").table("orders").config()["primary_key"].run(connection) == "number"
    assert sorted(r.db("shop").table("orders").run(connection), key=lambda d: d["number"]) == before
    assert r.db("shop").table("empty").count().run(connection) == 0
    assert r.table("notes").get("n").run(connection) == {"id": "n", "text": "kept"}
    assert sorted(r.db("shop").table("orders").index_list().run(connection)) == ["customer", "items", "total"]
    orders_table = r.db("shop").table("orders")
    assert orders_table.get_all("c3", index="customer").count().run(connection) == len([o for o in range(1500) if o % 13 == 3])
    assert orders_table.get_all("j", index="items").count().run(connection) == 1500
    assert [d["number"] for d in orders_table.get_all(20, index="total").run(connection)] == [10]

    # Restoring over what exists is refused without --force.
    result = photondb(server, "restore", str(archive), check=False)
    assert result.returncode == 1 and "exists already" in result.stderr
    photondb(server, "restore", str(archive), "--force")
    assert orders_table.count().run(connection) == 1500

    # A file that is not a dump is refused with a clear error.
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"not an archive")
    result = photondb(server, "restore", str(bogus), check=False)
    assert result.returncode == 1 and result.stderr.startswith("photondb: ")
    connection.close()


def test_an_import_whose_batches_are_refused_stops_with_the_error(server, tmp_path):
    """A batch over the server's largest write fails every insert; the import
    must end with that error, not wait forever on a queue nobody drains."""
    big = tmp_path / "big.ndjson"
    big.write_text("".join(json.dumps({"id": i, "blob": "x" * 3000}) + "\n" for i in range(5000)))
    result = photondb(server, "import", str(big), "--table", "big", "--batch-size", "1000", "--parallel", "2", check=False)
    assert result.returncode == 1, result.stderr
    assert "ReqlResourceLimitError" in result.stderr and "exceeds the largest write" in result.stderr, result.stderr
    # Smaller batches of the same file go in.
    photondb(server, "import", str(big), "--table", "big", "--batch-size", "100", "--conflict", "replace")
    connection = r.connect(port=server.port)
    assert r.table("big").count().run(connection) == 5000
    connection.close()
