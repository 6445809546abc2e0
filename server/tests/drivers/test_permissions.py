"""Users and permissions as RethinkDB has them: `grant` at the global,
database and table scopes, checked on every query a user runs over the
driver port and HTTP, kept across restarts."""
import base64
import json
import urllib.request

import pytest
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlPermissionError, ReqlOpFailedError

from conftest import Server

r = RethinkDB()


def denied(query, connection, permission):
    with pytest.raises(ReqlPermissionError, match="User `ann` does not have the required `%s` permission." % permission):
        query.run(connection)


def test_grants_decide_what_a_user_may_do(data_dir):
    server = Server(data_dir, password="root").start()
    try:
        admin = r.connect(port=server.port, password="root")
        r.db_create("shop").run(admin)
        r.db("shop").table_create("orders").run(admin)
        r.db("shop").table_create("audit").run(admin)
        r.db("shop").table("orders").insert([{"id": i} for i in range(5)]).run(admin)
        r.db("rethinkdb").table("users").insert({"id": "ann", "password": "pw"}).run(admin)
        ann = r.connect(port=server.port, user="ann", password="pw")
        orders, audit = r.db("shop").table("orders"), r.db("shop").table("audit")

        # A new user may do nothing.
        denied(orders.count(), ann, "read")
        denied(orders.get(1), ann, "read")
        denied(orders.filter({"id": 1}), ann, "read")
        denied(orders.insert({"id": 9}), ann, "write")
        denied(r.db("shop").table_create("mine"), ann, "config")
        denied(r.db_create("mine"), ann, "config")
        denied(orders.index_create("by_id"), ann, "config")
        denied(orders.changes(), ann, "read")

        # Global read: every user table, not the system database.
        r.grant("ann", {"read": True}).run(admin)
        assert orders.count().run(ann) == 5 and orders.get(1).run(ann) == {"id": 1}
        assert sorted(row["id"] for row in orders.run(ann)) == list(range(5))
        denied(orders.insert({"id": 9}), ann, "write")
        denied(r.db("rethinkdb").table("users"), ann, "read")

        # Database write, taken back for one table: the narrowest scope decides.
        r.db("shop").grant("ann", {"write": True}).run(admin)
        r.db("shop").table("audit").grant("ann", {"write": False}).run(admin)
        assert orders.insert({"id": 9}).run(ann)["inserted"] == 1
        assert orders.get(9).update({"x": 1}).run(ann)["replaced"] == 1
        assert orders.get(9).delete().run(ann)["deleted"] == 1
        denied(audit.insert({"id": 1}), ann, "write")
        denied(r.grant("ann", {"config": True}), ann, "read")  # grant writes rethinkdb.permissions

        # Config on the database: tables come and go.
        r.db("shop").grant("ann", {"config": True}).run(admin)
        assert r.db("shop").table_create("mine").run(ann)["tables_created"] == 1
        denied(r.db_create("mine"), ann, "config")

        # Admin sees every grant in rethinkdb.permissions.
        rows = list(r.db("rethinkdb").table("permissions").filter({"user": "ann"}).run(admin))
        scopes = sorted((len(row["id"]), row.get("table", "")) for row in rows)
        assert scopes == [(1, ""), (2, ""), (3, "audit")]
        with pytest.raises(ReqlOpFailedError, match="admin` can't be modified"):
            r.grant("admin", {"read": False}).run(admin)

        # A new password keeps the grants; so does a restart.
        r.db("rethinkdb").table("users").get("ann").update({"password": "pw2"}).run(admin)
        server.stop()
        server = Server(data_dir, password="root").start()
        ann = r.connect(port=server.port, user="ann", password="pw2")
        assert r.db("shop").table("orders").count().run(ann) == 5
        denied(r.db("shop").table("audit").insert({"id": 1}), ann, "write")

        # HTTP runs queries with the same permissions (403 when denied).
        def http(term, user, password, path="/api/v1/query"):
            request = urllib.request.Request(
                "http://127.0.0.1:%d%s" % (server.http_port, path),
                data=None if term is None else json.dumps({"query": term}).encode(),
                headers={"Content-Type": "application/json",
                         "Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        audit_term = [15, [[14, ["shop"]], "audit"]]
        assert http([43, [audit_term]], "ann", "pw2") == (200, {"result": 0})
        status, body = http([56, [audit_term, {"id": 1}]], "ann", "pw2")
        assert status == 403 and body["error"]["type"] == "ReqlPermissionError"
        # A document read by its REST path (read straight from its shard).
        order_path = "/api/v1/dbs/shop/tables/orders/docs/1"
        assert http(None, "ann", "pw2", order_path) == (200, {"id": 1})

        # Taking every grant back.
        admin = r.connect(port=server.port, password="root")
        r.db("rethinkdb").table("permissions").filter({"user": "ann"}).delete().run(admin)
        denied(r.db("shop").table("orders").count(), ann, "read")
        status, body = http(None, "ann", "pw2", order_path)
        assert status == 403 and body["error"]["type"] == "ReqlPermissionError"
        assert http(None, "admin", "root", order_path) == (200, {"id": 1})
    finally:
        server.stop()
