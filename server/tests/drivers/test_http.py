"""The HTTP API against a real server: health probes, Prometheus metrics
and the ReQL query endpoint, with malformed, mistyped and oversized
requests."""
import json
import os
import urllib.error
import urllib.request

from rethinkdb import RethinkDB

r = RethinkDB()


def request(server, method, path, body=None, content_type="application/json"):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    headers = {"Content-Type": content_type} if data is not None else {}
    call = urllib.request.Request("http://127.0.0.1:%d%s" % (server.http_port, path), data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status, response.headers.get("Content-Type"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type"), error.read()


def query(server, term, optargs=None):
    status, _, body = request(server, "POST", "/api/v1/query", {"query": term, "optargs": optargs or {}})
    return status, json.loads(body)


def test_health_probes(server):
    status, content_type, body = request(server, "GET", "/health/live")
    assert (status, content_type, json.loads(body)) == (200, "application/json", {"status": "live"})
    status, _, body = request(server, "GET", "/health/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    status, _, _ = request(server, "GET", "/no/such/route")
    assert status == 404


def test_queries_over_http_agree_with_the_driver(server):
    # r.db('test').table_create('notes'), in the wire form drivers send.
    status, body = query(server, [60, [[14, ["test"]], "notes"]])
    assert status == 200 and body["result"]["tables_created"] == 1
    notes = [15, [[14, ["test"]], "notes"]]
    status, body = query(server, [56, [notes, [2, [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}]]]])
    assert status == 200 and body["result"]["inserted"] == 2
    status, body = query(server, [16, [notes, 2]])
    assert (status, body) == (200, {"result": {"id": 2, "text": "b"}})
    # A table read as a whole sequence, in key order.
    status, body = query(server, notes)
    assert (status, [row["id"] for row in body["result"]]) == (200, [1, 2])
    # The same data through the driver port.
    connection = r.connect(port=server.port)
    assert r.table("notes").get(1).run(connection) == {"id": 1, "text": "a"}
    # Errors: RethinkDB's type, message and backtrace.
    status, body = query(server, [16, [[15, [[14, ["test"]], "missing"]], 1]])
    assert status == 400
    assert body["error"]["type"] == "ReqlOpFailedError"
    assert body["error"]["message"] == "Table `test.missing` does not exist."
    status, body = query(server, [24, [1, "a"]])  # r.expr(1) + "a"
    assert status == 400 and body["error"]["type"] == "ReqlQueryLogicError"
    status, body = query(server, [999, []])
    assert status == 400 and body["error"]["type"] == "ReqlCompileError"
    status, body = query(server, [152, [notes]])  # changes(): not over this endpoint
    assert status == 400 and "Changefeeds" in body["error"]["message"]


def test_bad_requests(server):
    status, _, body = request(server, "POST", "/api/v1/query", b'{"query": [1, 2')
    assert status == 400
    assert "line 1, column" in json.loads(body)["error"]["message"]
    status, _, _ = request(server, "POST", "/api/v1/query", {"query": 1}, content_type="text/plain")
    assert status == 415
    status, _, body = request(server, "POST", "/api/v1/query", {"optargs": {}})
    assert status == 400 and "`query`" in json.loads(body)["error"]["message"]
    status, _, _ = request(server, "POST", "/api/v1/query", b'{"query": "' + b"x" * (17 << 20) + b'"}')
    assert status == 413
    # The server is fine afterwards.
    assert query(server, [24, [1, 2]]) == (200, {"result": 3})


def test_prometheus_metrics(server):
    connection = r.connect(port=server.port)
    r.table_create("counted").run(connection)
    r.table("counted").insert([{"id": i} for i in range(7)]).run(connection)
    query(server, [24, [1, 2]])
    status, content_type, body = request(server, "GET", "/_metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'photondb_table_documents{db="test",table="counted"} 7' in text
    assert 'photondb_queries_total{outcome="success",protocol="driver"}' in text
    assert 'photondb_queries_total{outcome="success",protocol="http"} 1' in text
    assert "photondb_driver_connections 1" in text
    assert "# TYPE photondb_query_duration_seconds histogram" in text
    assert 'photondb_http_requests_total{route="/api/v1/query",status="200"} 1' in text
    # The storage engine's counters: hard writes were synced and grouped.
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values["photondb_wal_fdatasync_duration_seconds_count"] > 0
    assert values['photondb_wal_fdatasync_duration_seconds_bucket{le="+Inf"}'] == values["photondb_wal_fdatasync_duration_seconds_count"]
    assert values["photondb_wal_group_commit_records_sum"] >= values["photondb_wal_group_commit_records_count"] > 0
    assert values["photondb_wal_bytes_written_total"] >= 4096
    assert "photondb_page_cache_hits_total" in values and "photondb_page_cache_misses_total" in values
    # The runtime and the process.
    assert values["photondb_recovery_duration_seconds"] > 0
    assert 'photondb_bus_inbox_depth{shard="0"}' in values
    assert 'photondb_bus_mesh_depth{shard="0"}' in values
    import time
    assert values["process_cpu_seconds_total"] > 0
    assert values["process_resident_memory_bytes"] > 1 << 20
    assert values["process_open_fds"] >= 3 and values["process_threads"] >= 2
    assert abs(values["process_start_time_seconds"] - time.time()) < 3600


def test_rest_resources(server):
    status, _, body = request(server, "POST", "/api/v1/dbs", {"name": "shop"})
    assert status == 201 and json.loads(body)["name"] == "shop"
    status, _, body = request(server, "POST", "/api/v1/dbs", {"name": "shop"})
    assert status == 400 and "already exists" in json.loads(body)["error"]["message"]
    status, _, body = request(server, "GET", "/api/v1/dbs")
    assert status == 200 and "shop" in json.loads(body)
    status, _, body = request(server, "POST", "/api/v1/dbs/shop/tables", {"name": "items", "primary_key": "sku"})
    assert status == 201 and json.loads(body)["primary_key"] == "sku"
    assert request(server, "GET", "/api/v1/dbs/nowhere/tables")[0] == 404
    assert json.loads(request(server, "GET", "/api/v1/dbs/shop/tables")[2]) == ["items"]

    docs = "/api/v1/dbs/shop/tables/items/docs"
    status, _, body = request(server, "POST", docs, [{"sku": i, "name": "item %d" % i} for i in range(25)])
    assert status == 201 and json.loads(body)["inserted"] == 25
    status, _, body = request(server, "POST", docs, {"sku": 3, "name": "again"})
    assert status == 409 and "Duplicate primary key" in json.loads(body)["error"]["message"]
    assert request(server, "GET", "/api/v1/dbs/shop/tables/missing/docs")[0] == 404

    # Pages in key order, none repeated or skipped.
    seen, cursor = [], None
    while True:
        path = docs + "?limit=10" + ("&cursor=" + cursor if cursor else "")
        status, _, body = request(server, "GET", path)
        assert status == 200
        page = json.loads(body)
        seen.extend(document["sku"] for document in page["docs"])
        cursor = page["cursor"]
        if cursor is None:
            break
    assert seen == list(range(25))
    assert request(server, "GET", docs + "?limit=0")[0] == 400
    assert request(server, "GET", docs + "?cursor=garbage!")[0] == 400

    status, _, body = request(server, "GET", docs + "/7")
    assert (status, json.loads(body)) == (200, {"sku": 7, "name": "item 7"})
    assert request(server, "GET", docs + "/700")[0] == 404
    status, _, body = request(server, "PATCH", docs + "/7", {"price": 3})
    assert (status, json.loads(body)) == (200, {"sku": 7, "name": "item 7", "price": 3})
    status, _, body = request(server, "PUT", docs + "/7", {"sku": 7, "name": "renamed"})
    assert (status, json.loads(body)) == (200, {"sku": 7, "name": "renamed"})
    assert request(server, "PATCH", docs + "/700", {"price": 1})[0] == 404
    assert request(server, "PUT", docs + "/7", {"sku": 7}, content_type="text/plain")[0] == 415
    assert request(server, "PUT", docs + "/7", b"{not json")[0] == 400
    assert request(server, "DELETE", docs + "/7")[0] == 204
    assert request(server, "DELETE", docs + "/7")[0] == 404
    assert request(server, "DELETE", "/api/v1/dbs/shop/tables/items")[0] == 204
    assert request(server, "DELETE", "/api/v1/dbs/shop/tables/items")[0] == 404
    assert request(server, "DELETE", "/api/v1/dbs/shop")[0] == 204
    assert request(server, "DELETE", "/api/v1/dbs/shop")[0] == 404


def test_openapi_document_matches_the_routes(server):
    status, _, body = request(server, "GET", "/api/v1/openapi.json")
    assert status == 200
    document = json.loads(body)
    assert document["openapi"].startswith("3.")
    checked = 0
    for path, item in document["paths"].items():
        concrete = path.replace("{db}", "nodb").replace("{table}", "notable").replace("{id}", "1")
        for method in ("get", "post", "put", "patch", "delete"):
            if method not in item:
                continue
            body = {} if method in ("post", "put", "patch") else None
            status, _, answer = request(server, method.upper(), concrete, body)
            # Every listed route exists: no 405, and no bare 404 of an
            # unknown route (ours carry a JSON error).
            assert status != 405, (method, path)
            assert status != 404 or json.loads(answer)["error"], (method, path)
            assert str(status) in item[method]["responses"], (method, path, status)
            checked += 1
    assert checked >= 17
    # And a route the document does not list is unknown.
    assert request(server, "GET", "/api/v1/nothing")[0] == 404


def test_authentication_with_the_driver_users(data_dir):
    import base64
    from conftest import Server

    server = Server(data_dir, password="s3cret").start()
    try:
        def basic(user, password):
            return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()

        def call(path, authorization=None, body=None):
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"}
            if authorization:
                headers["Authorization"] = authorization
            call = urllib.request.Request("http://127.0.0.1:%d%s" % (server.http_port, path), data=data, headers=headers, method="POST" if data else "GET")
            try:
                with urllib.request.urlopen(call, timeout=30) as response:
                    return response.status, response.headers, response.read()
            except urllib.error.HTTPError as error:
                return error.code, error.headers, error.read()

        status, headers, body = call("/api/v1/query", body={"query": [24, [1, 2]]})
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert json.loads(body)["error"]["type"] == "ReqlAuthError"
        assert call("/api/v1/query", basic("admin", "wrong"), {"query": [24, [1, 2]]})[0] == 401
        assert call("/api/v1/query", basic("nobody", "s3cret"), {"query": [24, [1, 2]]})[0] == 401
        assert call("/api/v1/query", "Bearer something", {"query": [24, [1, 2]]})[0] == 401
        status, _, body = call("/api/v1/query", basic("admin", "s3cret"), {"query": [24, [1, 2]]})
        assert (status, json.loads(body)) == (200, {"result": 3})
        assert call("/api/v1/dbs")[0] == 401
        assert call("/api/v1/dbs", basic("admin", "s3cret"))[0] == 200
        # Probes, metrics and the API description stay open.
        for path in ("/health/live", "/health/ready", "/_metrics", "/api/v1/openapi.json"):
            assert call(path)[0] == 200, path
        # A user made through the driver port works over HTTP too.
        connection = r.connect(port=server.port, password="s3cret")
        r.db("rethinkdb").table("users").insert({"id": "reader", "password": "pw"}).run(connection)
        assert call("/api/v1/query", basic("reader", "pw"), {"query": [24, [1, 2]]})[0] == 200
    finally:
        server.stop()


def test_metrics_pass_promtool(server):
    """`promtool check metrics` (Debian package prometheus; scripts/test.sh
    installs it) accepts the exposition."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus"
    connection = r.connect(port=server.port)
    r.table_create("checked").run(connection)
    r.table("checked").insert({"id": 1}).run(connection)
    query(server, [24, [1, 2]])
    _, _, body = request(server, "GET", "/_metrics")
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def raw(server, method, path, headers=None, body=None):
    """Status, headers and the body exactly as sent (no decompression)."""
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    result = response.status, response.headers, response.read()
    connection.close()
    return result


def test_request_ids_metrics_and_compression_for_every_route(server):
    # A request id is made when the client sends none, and echoed when it does.
    _, headers, _ = raw(server, "GET", "/health/live")
    made = headers["x-request-id"]
    assert made
    _, headers, _ = raw(server, "GET", "/health/live")
    assert headers["x-request-id"] != made
    _, headers, _ = raw(server, "GET", "/api/v1/dbs", {"x-request-id": "trace-42"})
    assert headers["x-request-id"] == "trace-42"
    # Metrics label routes by template; an unknown path is "unmatched",
    # never the path itself.
    raw(server, "GET", "/api/v1/dbs/test/tables")
    raw(server, "GET", "/api/v1/dbs/nowhere/tables")
    raw(server, "GET", "/no/such/route/12345")
    text = raw(server, "GET", "/_metrics")[2].decode()
    assert 'photondb_http_requests_total{route="/api/v1/dbs/{db}/tables",status="200"} 1' in text
    assert 'photondb_http_requests_total{route="/api/v1/dbs/{db}/tables",status="404"} 1' in text
    assert 'photondb_http_requests_total{route="unmatched",status="404"} 1' in text
    assert 'photondb_http_requests_total{route="/health/live",status="200"} 2' in text
    assert "12345" not in text and "nowhere" not in text
    # Bodies are gzipped for clients that accept it, and only for them.
    _, headers, plain = raw(server, "GET", "/api/v1/openapi.json")
    assert headers.get("content-encoding") is None
    _, headers, packed = raw(server, "GET", "/api/v1/openapi.json", {"accept-encoding": "gzip"})
    import gzip
    assert headers["content-encoding"] == "gzip" and len(packed) < len(plain)
    assert json.loads(gzip.decompress(packed)) == json.loads(plain)


def test_cross_origin_calls_only_from_configured_origins(data_dir):
    from conftest import Server

    origin = "https://app.example"
    preflight = {"origin": origin, "access-control-request-method": "POST",
                 "access-control-request-headers": "content-type"}
    server = Server(data_dir, extra_args=["--cors-origin", origin]).start()
    try:
        status, headers, _ = raw(server, "OPTIONS", "/api/v1/query", preflight)
        assert status == 200 and headers["access-control-allow-origin"] == origin
        assert "POST" in headers["access-control-allow-methods"]
        _, headers, _ = raw(server, "GET", "/api/v1/dbs", {"origin": origin})
        assert headers["access-control-allow-origin"] == origin
        _, headers, _ = raw(server, "GET", "/api/v1/dbs", {"origin": "https://evil.example"})
        assert headers.get("access-control-allow-origin") is None
    finally:
        server.stop()
    # Off by default: no origin is allowed.
    server = Server(data_dir).start()
    try:
        _, headers, _ = raw(server, "GET", "/api/v1/dbs", {"origin": origin})
        assert headers.get("access-control-allow-origin") is None
    finally:
        server.stop()
    # A malformed origin stops the server at start with a clear line.
    import subprocess
    from conftest import BINARY
    done = subprocess.run([BINARY, "serve", "--data-dir", data_dir, "--driver-port", "0", "--http-port", "0",
                           "--cors-origin", "bad\norigin"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--cors-origin" in done.stderr


def test_bearer_tokens(data_dir):
    import base64
    from conftest import Server

    server = Server(data_dir, password="s3cret").start()
    basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()

    def call(method, path, authorization=None, body=None):
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        status, _, answer = raw(server, method, path, headers, None if body is None else json.dumps(body))
        return status, json.loads(answer) if answer else None

    try:
        # Credentials are needed to get one.
        assert call("POST", "/api/v1/auth/token")[0] == 401
        status, issued = call("POST", "/api/v1/auth/token", basic, {"expires_in": 120})
        assert status == 200 and issued["token_type"] == "Bearer" and issued["expires_in"] == 120
        assert issued["user"] == "admin"
        bearer = "Bearer " + issued["token"]
        assert call("GET", "/api/v1/dbs", bearer) == (200, ["rethinkdb", "test"])
        assert call("POST", "/api/v1/query", bearer, {"query": [24, [1, 2]]}) == (200, {"result": 3})
        # Tampering with any part breaks it.
        header, claims, signature = issued["token"].split(".")
        forged_claims = base64.urlsafe_b64encode(json.dumps({"sub": "admin", "exp": 4102444800}).encode()).decode().rstrip("=")
        for forged in [header + "." + forged_claims + "." + signature, issued["token"][:-2] + "AA", "x.y.z", ""]:
            status, body = call("GET", "/api/v1/dbs", "Bearer " + forged)
            assert status == 401 and body["error"]["type"] == "ReqlAuthError", forged
        # Bad lifetimes are refused.
        for asked in [{"expires_in": 0}, {"expires_in": "soon"}, {"expires_in": 10**9}, [1]]:
            assert call("POST", "/api/v1/auth/token", basic, asked)[0] == 400, asked
        # Tokens outlive a restart (the key is in the data directory)…
        server.stop()
        server = Server(data_dir).start()
        assert call("GET", "/api/v1/dbs", bearer)[0] == 200
        # …but not a password change.
        connection = r.connect(port=server.port, password="s3cret")
        r.db("rethinkdb").table("users").get("admin").update({"password": "changed"}).run(connection)
        status, body = call("GET", "/api/v1/dbs", bearer)
        assert status == 401 and "password" in body["error"]["message"]
        # A user's token is that user's: another user gets their own.
        r.db("rethinkdb").table("users").insert({"id": "reader", "password": "pw"}).run(connection)
        reader = "Basic " + base64.b64encode(b"reader:pw").decode()
        status, issued = call("POST", "/api/v1/auth/token", reader)
        assert status == 200 and issued["user"] == "reader" and issued["expires_in"] == 3600
        assert call("GET", "/api/v1/dbs", "Bearer " + issued["token"])[0] == 200
        # And a token can be used to get a fresh one.
        status, renewed = call("POST", "/api/v1/auth/token", "Bearer " + issued["token"], {"expires_in": 60})
        assert status == 200 and renewed["user"] == "reader"
        key = os.path.join(data_dir, "http-token.key")
        assert os.stat(key).st_mode & 0o777 == 0o600
    finally:
        server.stop()


def test_query_results_stream_as_ndjson(server):
    connection = r.connect(port=server.port)
    r.table_create("lines").run(connection)
    rows = [{"id": i, "x": i * 2, "pad": "p" * 200} for i in range(3000)]
    del rows[2500]["x"]
    r.table("lines").insert(rows).run(connection)
    ndjson = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
    table = [15, [[14, ["test"]], "lines"]]

    def streamed(term, optargs=None):
        status, headers, body = raw(server, "POST", "/api/v1/query", ndjson,
                                    json.dumps({"query": term, "optargs": optargs or {}}))
        return status, headers, [json.loads(line) for line in body.decode().splitlines()]

    # A whole table, a line per row, in chunks while it is read (no length
    # known up front).
    status, headers, lines = streamed(table)
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    assert headers.get("transfer-encoding") == "chunked" and headers.get("content-length") is None
    assert sorted(line["id"] for line in lines) == list(range(3000))
    # Not held as one array: past array_limit, where the JSON answer fails.
    status, _, lines = streamed(table, {"array_limit": 10})
    assert status == 200 and len(lines) == 3000
    status, body = query(server, table, {"array_limit": 10})
    assert status == 422 and "Array over size limit" in body["error"]["message"]
    # Atoms: a value is one line, an array its elements.
    assert streamed([24, [1, 2]])[2] == [3]
    assert streamed([2, [1, [2, ["a", "b"]], {"c": 1}]])[2] == [1, ["a", "b"], {"c": 1}]
    # An error before the first row is an ordinary error answer…
    status, headers, lines = streamed([15, [[14, ["test"]], "missing"]])
    assert status == 400 and headers["content-type"] == "application/json"
    assert lines[0]["error"]["type"] == "ReqlOpFailedError"
    # …one after it ends the stream as its last line.
    ordered = [41, [table], {"index": "id"}]  # order_by(index='id')
    mapped = [38, [ordered, [69, [[2, [1]], [170, [[10, [1]], "x"]]]]]]  # .map(row['x'])
    status, _, lines = streamed(mapped)
    assert status == 200 and lines[:2500] == [i * 2 for i in range(2500)]
    assert lines[-1]["error"]["type"] == "ReqlNonExistenceError"
    assert "No attribute `x`" in lines[-1]["error"]["message"]
    # A client that leaves early stops its query; the server carries on.
    import socket
    with socket.create_connection(("127.0.0.1", server.http_port)) as sock:
        body = json.dumps({"query": table}).encode()
        sock.sendall(b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Accept: application/x-ndjson\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    assert query(server, [24, [1, 2]]) == (200, {"result": 3})
    assert len(streamed(table)[2]) == 3000
