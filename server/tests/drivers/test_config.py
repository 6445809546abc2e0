"""Configuration layers of `photondb serve`: defaults < TOML file (--config)
< PHOTONDB_* environment < flags, shown by `photondb config print`."""
import os
import subprocess
import tomllib

import pytest
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlAuthError

from conftest import BINARY, LISTENING

r = RethinkDB()


def config_print(*flags, env=None, expect_ok=True):
    done = subprocess.run([BINARY, "config", "print", *flags], capture_output=True, text=True, timeout=60,
                          env=dict({k: v for k, v in os.environ.items() if not k.startswith("PHOTONDB_")}, **(env or {})))
    if expect_ok:
        assert done.returncode == 0, done.stderr
        return tomllib.loads(done.stdout)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    return done.stderr


def test_defaults_file_environment_and_flags_in_that_order(tmp_path):
    defaults = config_print()
    assert defaults["driver_port"] == 28015 and defaults["cache_size"] == "auto"
    assert defaults["shutdown_grace"] == "10s" and defaults["storage"] == "durable"
    file = tmp_path / "photondb.toml"
    file.write_text('cache_size = "256MiB"\nhttp_port = 9000\ndriver_port = 29000\n'
                    'shutdown_grace = 90\ncors_origins = ["https://a.example"]\n')
    from_file = config_print("--config", str(file))
    assert (from_file["cache_size"], from_file["http_port"], from_file["driver_port"]) == ("256MiB", 9000, 29000)
    assert from_file["shutdown_grace"] == "90s" and from_file["cors_origins"] == ["https://a.example"]
    # The environment overrides the file; other PHOTONDB_* variables (the
    # client's) are not settings.
    env = {"PHOTONDB_HTTP_PORT": "9100", "PHOTONDB_CORS_ORIGINS": "https://b.example,https://c.example",
           "PHOTONDB_PORT": "1", "PHOTONDB_INITIAL_PASSWORD": "1234"}
    layered = config_print("--config", str(file), env=env)
    assert layered["http_port"] == 9100 and layered["driver_port"] == 29000
    assert layered["cors_origins"] == ["https://b.example", "https://c.example"]
    assert layered["initial_password"] == "(hidden)"
    # Flags override everything; the file may also come from PHOTONDB_CONFIG.
    flagged = config_print("--http-port", "9200", "--cache-size", "2GiB", "--shutdown-grace", "2m",
                           env=dict(env, PHOTONDB_CONFIG=str(file)))
    assert (flagged["http_port"], flagged["cache_size"], flagged["shutdown_grace"]) == (9200, "2GiB", "2m")
    assert flagged["driver_port"] == 29000
    # Earlier flag spellings still work.
    assert config_print("--wal-ring-mib", "4")["wal_ring_size"] == "4MiB"


def test_configuration_mistakes_are_one_line_errors(tmp_path):
    assert "does not exist" in config_print("--config", str(tmp_path / "missing.toml"), expect_ok=False)
    bad = tmp_path / "bad.toml"
    bad.write_text('cache_size = "lots"\n')
    message = config_print("--config", str(bad), expect_ok=False)
    # figment names the file (relative to the working directory when shorter).
    assert "cache_size" in message and "512MiB" in message and "bad.toml" in message
    bad.write_text("cache_sise = 1\n")
    assert "unknown field" in config_print("--config", str(bad), expect_ok=False)
    assert "partitions" in config_print(env={"PHOTONDB_PARTITIONS": "0"}, expect_ok=False)
    done = subprocess.run([BINARY, "config", "print", "--http-timeout", "soon"], capture_output=True, text=True)
    assert done.returncode != 0 and "duration" in done.stderr


def test_a_server_runs_with_its_configuration_file(tmp_path):
    file = tmp_path / "photondb.toml"
    file.write_text('data_dir = "%s"\ninitial_password = "from-file"\ndriver_port = 0\nhttp_port = 0\n'
                    'partitions = 2\nwal_ring_size = "4MiB"\n' % (tmp_path / "data"))
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([BINARY, "serve", "--config", str(file)], stderr=log, stdout=subprocess.DEVNULL)
    try:
        import re
        import time
        deadline = time.time() + 60
        port = None
        while port is None and time.time() < deadline:
            found = LISTENING.search((tmp_path / "server.log").read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        assert port, (tmp_path / "server.log").read_text()
        with pytest.raises(ReqlAuthError):
            r.connect(port=port)
        connection = r.connect(port=port, password="from-file")
        assert r.expr(1).run(connection) == 1
        connection.close()
        assert (tmp_path / "data" / "PHOTONDB").exists()
    finally:
        process.terminate()
        process.wait(timeout=60)
