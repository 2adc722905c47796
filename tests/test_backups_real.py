"""Restore drills, for real: a PostgreSQL 15 and two Redis 7 (the data services' and the workers') holding known data, backed up with the job's own
script over SSH (the program's SSH options, a loopback sshd), destroyed, restored, compared.

Only `docker` is stood in for. The script runs as it would on a host, and its `docker exec`, `stop`,
`start`, `pause` and `inspect` go to a stand-in (FAKE_DOCKER below) that runs the command here against the
local servers, with exactly the environment the container would have: PostgreSQL's password exists only
in the "container's" POSTGRES_PASSWORD, each Redis's in its REDISCLI_AUTH, Qdrant's API key in
QDRANT__SERVICE__API_KEY. PostgreSQL (Debian `postgresql`) and Redis (`redis-server`) run on 127.0.0.1 in
temporary directories, never as system services. No Qdrant binary runs here: a stand-in HTTP server
answers the calls the backup and the restore make, and refuses any call, query parameter or body that
Qdrant v1.7.4's published OpenAPI does not define (QDRANT_API below). Grafana is its SQLite database and
a stand-in writer that commits to it continuously, so a copy taken without pausing could tear.

Without PostgreSQL, Redis, sshd or root the tests are skipped with the reason; with
OCTOLLM_REQUIRE_REAL_HOST=1 (CI) they fail instead.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from components import host_scripts as scripts
from loopback import free_port, start_sshd
from loopback_postgres import pg_bin as _pg_bin, start_cluster
from test_real_host import unavailable
from test_secrets_real import CmdlineSampler
from tooling import backup as backup_tool
from tooling import restore as restore_tool

STACK = "drill"
PG_PASSWORD = f"pg-Drill-{secrets.token_hex(8)}"
REDIS_PASSWORD = f"redis-Drill-{secrets.token_hex(8)}"
WORKER_REDIS_PASSWORD = f"worker-redis-Drill-{secrets.token_hex(8)}"
QDRANT_KEY = f"qdrant-Drill-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class RedisInstance:
    """One Redis the backups copy: its backup service name, its container, its password and how many keys the
    drills put in (different for each, so a restore from the other's copy shows)."""
    service: str
    container: str
    password: str
    strings: int


# The data services' Redis and the workers' (seed 002's queue): the same backup and restore code runs for both.
REDISES = {"redis": RedisInstance("redis", "drill-redis", REDIS_PASSWORD, 300),
           "worker-redis": RedisInstance("worker-redis", "drill-worker-redis", WORKER_REDIS_PASSWORD, 120)}

# ----------------------------------------------------------------------------------------- docker

FAKE_DOCKER = r'''#!{python}
"""docker, as far as backup.sh and restore.sh use it: exec, inspect, stop, start, pause, unpause.
Each container is a local process or server; exec runs the command here with the container's own
environment (plus what -e names), its PATH limited to the container's tools, and its mount points
mapped to their host directories."""
import json, os, signal, subprocess, sys, time
conf = json.load(open(os.environ["FAKE_DOCKER_CONF"]))
args = sys.argv[1:]
with open(conf["log"], "a") as f:
    f.write(json.dumps(args) + "\n")

def state_path(c):
    return os.path.join(conf["state"], c + ".json")

def load(c):
    if c not in conf["containers"]:
        sys.stderr.write("Error: No such container: %s\n" % c)
        sys.exit(1)
    try:
        return json.load(open(state_path(c)))
    except FileNotFoundError:
        return {{"running": True, "paused": False, "pid": None}}

def save(c, st):
    json.dump(st, open(state_path(c), "w"))

def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False

cmd = args[0]
if cmd == "exec":
    rest, names = args[1:], []
    while rest and rest[0].startswith("-"):
        if rest[0] == "-e":
            names.append(rest[1]); rest = rest[2:]
        else:
            rest = rest[1:]
    c, argv = rest[0], rest[1:]
    st, ctr = load(c), conf["containers"][c]
    if not st["running"]:
        sys.stderr.write("Error response from daemon: container %s is not running\n" % c); sys.exit(1)
    if st["paused"]:
        sys.stderr.write("Error response from daemon: container %s is paused, unpause the container before exec\n" % c)
        sys.exit(1)
    env = {{"PATH": ctr["bin"], **ctr["env"]}}
    env.update({{n: os.environ[n] for n in names if n in os.environ}})
    for inside, outside in ctr.get("paths", {{}}).items():
        argv = [a.replace(inside, outside) for a in argv]
    os.execvpe(argv[0], argv, env)
elif cmd == "inspect":
    c = args[-1]
    st = load(c)
    print("true" if st["running"] else "false")
elif cmd in ("pause", "unpause"):
    c = args[1]
    st = load(c)
    if st.get("pid"):
        os.kill(st["pid"], signal.SIGSTOP if cmd == "pause" else signal.SIGCONT)
    st["paused"] = cmd == "pause"
    save(c, st)
    print(c)
elif cmd == "stop":
    c = args[-1]
    st = load(c)
    pid = st.get("pid")
    if pid and alive(pid):
        os.kill(pid, signal.SIGTERM)
        for _ in range(600):
            if not alive(pid):
                break
            time.sleep(0.1)
    st.update(running=False, paused=False, pid=None)
    save(c, st)
    print(c)
elif cmd == "start":
    c = args[-1]
    st, ctr = load(c), conf["containers"][c]
    if ctr.get("start"):
        log = open(os.path.join(conf["state"], c + ".log"), "a")
        p = subprocess.Popen(ctr["start"], stdout=log, stderr=log, start_new_session=True)
        st["pid"] = p.pid
    st.update(running=True, paused=False)
    save(c, st)
    print(c)
else:
    sys.stderr.write("fake docker: %s is not stood in for\n" % cmd)
    sys.exit(2)
'''

# --------------------------------------------------------------------------------------- Qdrant

# The calls backup.sh and restore.sh make, as Qdrant v1.7.4 publishes them (qdrant/qdrant at tag v1.7.4,
# docs/redoc/master/openapi.json): method and path template -> allowed query parameters and the request
# body's media type with its form fields. SnapshotPriority is an enum. Anything else is refused.
QDRANT_API = {
    ("GET", "/collections"): (set(), None),
    ("GET", "/aliases"): (set(), None),
    ("POST", "/collections/{collection_name}/snapshots"): ({"wait"}, None),
    ("GET", "/collections/{collection_name}/snapshots"): (set(), None),
    ("GET", "/collections/{collection_name}/snapshots/{snapshot_name}"): (set(), None),
    ("DELETE", "/collections/{collection_name}/snapshots/{snapshot_name}"): ({"wait"}, None),
    ("POST", "/collections/{collection_name}/snapshots/upload"): ({"wait", "priority"},
                                                                   ("multipart/form-data", {"snapshot"})),
    ("PUT", "/collections/{collection_name}/snapshots/recover"): ({"wait"}, ("application/json", {"location"})),
}
SNAPSHOT_PRIORITY = {"no_sync", "snapshot", "replica"}


def _template_match(method: str, path: str) -> tuple[str, dict] | None:
    """The API operation a request is: its method, and the path template with the fewest parameters that
    matches (a literal segment such as /snapshots/upload wins over {snapshot_name})."""
    for m_, tmpl in sorted(QDRANT_API, key=lambda k: k[1].count("{")):
        rx = "^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(tmpl)) + "$"
        m = re.match(rx, path)
        if m and m_ == method:
            return tmpl, m.groupdict()
    return None


@dataclass
class QdrantStandIn:
    key: str
    collections: dict[str, bytes] = field(default_factory=dict)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    snapshots: dict[tuple[str, str], bytes] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None


def start_qdrant(port: int, key: str) -> QdrantStandIn:
    q = QdrantStandIn(key)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json"):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, result, code: int = 200):
            self._send(code, json.dumps({"result": result, "status": "ok", "time": 0.001},
                                        separators=(",", ":")).encode())

        def _refuse(self, why: str, code: int = 404):
            q.refused.append(f"{self.command} {self.path}: {why}")
            self._send(code, json.dumps({"status": {"error": why}}).encode())

        def _handle(self):
            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            call = {"method": self.command, "path": url.path, "query": query, "ctype": ctype, "fields": []}
            q.calls.append(call)
            if self.headers.get("api-key") != q.key:
                return self._refuse("missing or wrong api-key header", 403)
            found = _template_match(self.command, url.path)
            if found is None:
                return self._refuse("no such operation in Qdrant v1.7.4's API")
            tmpl, params = found
            allowed, want_body = QDRANT_API[(self.command, tmpl)]
            if set(query) - allowed:
                return self._refuse(f"query parameters {sorted(set(query) - allowed)} are not defined", 400)
            if "wait" in query and query["wait"] != ["true"] and query["wait"] != ["false"]:
                return self._refuse("wait must be a boolean", 400)
            if "priority" in query and query["priority"][0] not in SNAPSHOT_PRIORITY:
                return self._refuse("priority must be a SnapshotPriority", 400)
            form: dict[str, bytes] = {}
            if want_body is None:
                if body:
                    return self._refuse("this operation takes no request body", 400)
            else:
                if ctype != want_body[0]:
                    return self._refuse(f"the body must be {want_body[0]}, not {ctype or 'none'}", 415)
                if ctype == "multipart/form-data":
                    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body)
                    for part in msg.iter_parts():
                        form[part.get_param("name", header="content-disposition")] = part.get_payload(decode=True)
                    call["fields"] = sorted(form)
                    if set(form) - want_body[1]:
                        return self._refuse(f"form fields {sorted(set(form) - want_body[1])} are not defined", 400)
            name = params.get("collection_name")
            if tmpl == "/collections":
                return self._json({"collections": [{"name": n} for n in sorted(q.collections)]})
            if tmpl == "/aliases":
                return self._json({"aliases": [{"alias_name": a, "collection_name": c} for a, c in q.aliases]})
            if tmpl.endswith("/snapshots/upload"):
                q.collections[name] = form["snapshot"].removeprefix(b"SNAPSHOT:")
                return self._json(True)
            if name not in q.collections:
                return self._refuse(f"Collection `{name}` doesn't exist!")
            if tmpl == "/collections/{collection_name}/snapshots" and self.command == "POST":
                snap = f"{name}-{secrets.randbelow(10**18)}-2026-12-01-03-30-00.snapshot"
                q.snapshots[(name, snap)] = b"SNAPSHOT:" + q.collections[name]
                return self._json({"name": snap, "creation_time": "2026-12-01T03:30:00",
                                   "size": len(q.snapshots[(name, snap)])})
            if tmpl == "/collections/{collection_name}/snapshots":
                return self._json([{"name": s, "size": len(b)} for (c, s), b in q.snapshots.items() if c == name])
            snap = params.get("snapshot_name")
            if (name, snap) not in q.snapshots:
                return self._refuse(f"snapshot {snap} not found")
            if self.command == "GET":
                return self._send(200, q.snapshots[(name, snap)], "application/octet-stream")
            del q.snapshots[(name, snap)]
            return self._json(True)

        do_GET = do_POST = do_PUT = do_DELETE = _handle

    q.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=q.server.serve_forever, daemon=True).start()
    return q


# --------------------------------------------------------------------------------------- Grafana

WRITER = r'''
import signal, sqlite3, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
i = 0
while True:
    # Both tables change in one transaction: a copy of a consistent state has events == counter.n.
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO events (payload) VALUES (?)", [(("x" * 1500) + str(i + k),) for k in range(20)])
    db.execute("UPDATE counter SET n = n + 20")
    db.execute("COMMIT")
    i += 20
    time.sleep(0.002)
'''


def grafana_state(db: Path, upto: int | None = None) -> tuple[int, int, str, str]:
    """(counter, rows, integrity, digest of the rows) of a copy of `db` and its journal: opening the file
    itself could roll a hot journal back into it, and a backup must stay as it was made."""
    scratch = Path(tempfile.mkdtemp(prefix="octollm-grafana-"))
    try:
        for f in db.parent.glob(db.name + "*"):
            shutil.copy(f, scratch / f.name)
        con = sqlite3.connect(scratch / db.name, timeout=30)
        try:
            n = con.execute("SELECT n FROM counter").fetchone()[0]
            rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
            ok = con.execute("PRAGMA integrity_check").fetchone()[0]
            digest = con.execute("SELECT count(*) || ':' || coalesce(sum(length(payload) * id), 0) FROM events "
                                 "WHERE id <= ?", (rows if upto is None else upto,)).fetchone()[0]
            marks = con.execute("SELECT count(*) FROM sqlite_master WHERE name = 'marks'").fetchone()[0]
            return n, rows, ok, f"{digest}:{marks}"
        finally:
            con.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------------------- the estate

@dataclass
class Estate:
    base: Path
    stack_file: Path
    appdata: Path
    target: Path
    pg_port: int
    redis_ports: dict[str, int]  # by backup service name (REDISES)
    qdrant: QdrantStandIn
    fake_log: Path
    state: Path
    writer: Path
    sshd: object

    def psql(self, sql: str) -> str:
        """SQL as the octollm role over TCP, the password in the environment (never in argv)."""
        out = subprocess.run([_pg_bin("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-qAt", "-h", "127.0.0.1", "-p",
                              str(self.pg_port), "-U", "octollm", "-d", "octollm"], input=sql, capture_output=True,
                             text=True, env={"PATH": "/usr/bin:/bin", "PGPASSWORD": PG_PASSWORD}, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def redis(self, *args: str, svc: str = "redis") -> str:
        out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.redis_ports[svc]), *args],
                             capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "REDISCLI_AUTH": REDISES[svc].password}, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def docker(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.base / "fakebin" / "docker"), *args], capture_output=True, text=True,
                              env={**os.environ, "FAKE_DOCKER_CONF": str(self.base / "fake-docker.json")}, timeout=120)


def _link_tools(bin_dir: Path, tools: dict[str, str]) -> str:
    bin_dir.mkdir(parents=True)
    for name, target in tools.items():
        (bin_dir / name).symlink_to(target)
    return str(bin_dir)


@pytest.fixture(scope="module")
def estate():
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        unavailable("the drill needs root to run PostgreSQL as the postgres user")
    for tool, pkg in (("redis-server", "redis-server"), ("redis-cli", "redis-tools"), ("sqlite3", "sqlite3"),
                      ("curl", "curl"), ("flock", "util-linux"), ("sshd", "openssh-server")):
        if shutil.which(tool) is None and not (tool == "sshd" and os.path.exists("/usr/sbin/sshd")):
            unavailable(f"{tool} is not installed (Debian package {pkg})")
    base = Path(tempfile.mkdtemp(prefix="octollm-drill-"))
    base.chmod(0o755)
    appdata, target, state = base / "appdata", base / "backups", base / "state"
    for d in (appdata / "grafana", target, state, *(appdata / r for r in REDISES)):
        d.mkdir(parents=True)
    # PostgreSQL 15 as the official image sets it up: the socket trusts, TCP asks for the password.
    cluster = start_cluster(base)
    pg_port = cluster.port
    # The role's password reaches psql on stdin, as SQL, not in any argv.
    subprocess.run(cluster.psql("-qX"), check=True, capture_output=True, text=True,
                   input=f"CREATE ROLE octollm LOGIN SUPERUSER PASSWORD '{PG_PASSWORD}';\n"
                         "CREATE DATABASE octollm OWNER octollm;\n")
    # Each Redis 7 as the program runs it (AOF, everysec), its password in a private config file; the workers'
    # in workers.redisDataPath's default, <appdata>/worker-redis.
    redis_ports, rconfs = {}, {}
    for svc, r in REDISES.items():
        redis_ports[svc] = free_port()
        rconfs[svc] = base / f"{svc}.conf"
        rconfs[svc].write_text(f"port {redis_ports[svc]}\nbind 127.0.0.1\ndir {appdata / svc}\nappendonly yes\n"
                               f"appendfsync everysec\nrequirepass {r.password}\nenable-debug-command local\n"
                               "save 3600 1\n")
        rconfs[svc].chmod(0o600)
    qdrant_port = free_port()
    qdrant = start_qdrant(qdrant_port, QDRANT_KEY)
    # Grafana: its database, and a writer that commits to it all the time.
    db = appdata / "grafana" / "grafana.db"
    con = sqlite3.connect(db)
    con.executescript("CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT);"
                      "CREATE TABLE counter (n INTEGER); INSERT INTO counter VALUES (0);")
    con.close()
    writer = base / "writer.py"
    writer.write_text(WRITER)
    # The stand-in docker and the containers it knows.
    fakebin = base / "fakebin"
    fakebin.mkdir()
    (fakebin / "docker").write_text(FAKE_DOCKER.format(python=sys.executable))
    (fakebin / "docker").chmod(0o755)
    ctr = base / "ctr"
    clis = {}
    for svc in REDISES:  # redis-cli "in the container": its own server
        clis[svc] = ctr / f"{svc}-cli" / "redis-cli"
        clis[svc].parent.mkdir(parents=True)
        clis[svc].write_text(f'#!/bin/bash\nexec /usr/bin/redis-cli -h 127.0.0.1 -p {redis_ports[svc]} "$@"\n')
        clis[svc].chmod(0o755)
    conf = {"log": str(base / "docker-calls.log"), "state": str(state), "containers": {
        "drill-postgres": {"env": {"PGHOST": "127.0.0.1", "PGPORT": str(pg_port), "POSTGRES_USER": "octollm",
                                   "POSTGRES_DB": "octollm", "POSTGRES_PASSWORD": PG_PASSWORD},
                           "bin": _link_tools(ctr / "postgres", {"sh": "/bin/sh", **{
                               t: _pg_bin(t) for t in ("pg_dump", "pg_restore", "pg_isready", "psql")}})},
        **{r.container: {"env": {"REDISCLI_AUTH": r.password},
                         "bin": _link_tools(ctr / svc, {"sh": "/bin/sh", "redis-cli": str(clis[svc])}),
                         "start": [shutil.which("redis-server"), str(rconfs[svc])]} for svc, r in REDISES.items()},
        "drill-qdrant": {"env": {"QDRANT__SERVICE__API_KEY": QDRANT_KEY},
                         "bin": _link_tools(ctr / "qdrant", {"sh": "/bin/sh"})},
        # The pinned grafana image has no sqlite3: the backup pauses it for the copy.
        "drill-grafana": {"env": {}, "bin": _link_tools(ctr / "grafana", {"sh": "/bin/sh"}),
                          "paths": {"/var/lib/grafana": str(appdata / "grafana")},
                          "start": [sys.executable, str(writer), str(db)]},
    }}
    (base / "fake-docker.json").write_text(json.dumps(conf))
    try:
        sshd = start_sshd(base / "sshd", extra_config=(
            f"SetEnv PATH={fakebin}:/usr/bin:/bin FAKE_DOCKER_CONF={base / 'fake-docker.json'}\n"))
    except RuntimeError as exc:
        unavailable(str(exc))
    doc = {"config": {f"octollm-infra:{k}": v for k, v in {
        "platform": "docker",
        "hosts": {"box": {"kind": "ssh", "address": "127.0.0.1", "publishAddress": "127.0.0.1",
                          "ssh": {"user": sshd.user, "port": sshd.port, "identityFile": sshd.identity,
                                  "hostKey": sshd.host_key},
                          "cpuThreads": 64, "memoryGb": 256, "appdataRoot": str(appdata),
                          "dataOwner": f"{os.getuid()}:{os.getgid()}", "containerPrefix": "drill-",
                          "networks": {"drill-net": {"subnet": "172.31.250.0/24", "gateway": "172.31.250.1"}}}},
        "dataServices": {"host": "box", "network": "drill-net", "postgres": {"port": free_port()}, "redis": {"port": free_port()},
                         "qdrant": {"httpPort": qdrant_port, "grpcPort": free_port()}},
        "monitoring": {"host": "box", "network": "drill-net"},
        # Seed 002's workers: their Redis (no published port) is backed up as worker-redis.
        "workers": {"host": "box", "network": "drill-net", "redis": {"port": None}, "backend": "llamacpp",
                    "servers": {"llamacpp": {"host": "box", "engine": "llamacpp", "network": "drill-net",
                                             "port": free_port(), "modelPath": "m.gguf",
                                             "limits": {"cpus": 1, "memoryGb": 1}}}},
        "backups": {"host": "box", "target": str(target), "retention": {"daily": 7, "weekly": 4}},
    }.items()}}
    stack_file = base / f"Pulumi.{STACK}.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    e = Estate(base, stack_file, appdata, target, pg_port, redis_ports, qdrant, base / "docker-calls.log", state,
               writer, sshd)
    for c in (*(r.container for r in REDISES.values()), "drill-grafana"):
        assert e.docker("start", c).returncode == 0
    for svc in REDISES:
        wait_redis(e, svc)
    try:
        yield e
    finally:
        for c in (*(r.container for r in REDISES.values()), "drill-grafana"):
            e.docker("unpause", c)
            e.docker("stop", c)
        sshd.stop()
        qdrant.server.shutdown()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------- helpers

def seed_postgres(e: Estate) -> None:
    e.psql("DROP TABLE IF EXISTS items, tags, later;"
           "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, blob bytea, at timestamptz);"
           "CREATE TABLE tags (item int REFERENCES items(id), tag text);"
           "INSERT INTO items (name, blob, at) SELECT 'item-' || g, decode(md5(g::text), 'hex'), "
           "  '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 5000) g;"
           "INSERT INTO tags SELECT id, 't' || (id % 17) FROM items;")


def pg_fingerprint(e: Estate) -> dict:
    return {t: e.psql(f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "
                      f"FROM {t} x") for t in ("items", "tags")}


def wait_redis(e: Estate, svc: str) -> None:
    for _ in range(100):
        try:
            if e.redis("PING", svc=svc) == "PONG":
                return
        except AssertionError:
            pass
        time.sleep(0.1)


def seed_redis(e: Estate, svc: str = "redis") -> int:
    """Known data in one Redis (REDISES[svc].strings strings, 50 each of hashes, lists, sorted sets); the key count."""
    n = REDISES[svc].strings
    e.redis("FLUSHALL", svc=svc)
    for i in range(n):
        e.redis("SET", f"str:{i}", f"{svc}-value-{i}-{'y' * (i % 50)}", svc=svc)
    for i in range(50):
        e.redis("HSET", f"hash:{i}", "a", str(i), "b", f"b{i}", svc=svc)
        e.redis("RPUSH", f"list:{i}", *[f"e{j}" for j in range(i % 7 + 1)], svc=svc)
        e.redis("ZADD", f"zset:{i}", "1", "one", str(i), "many", svc=svc)
    return n + 150


def redis_fingerprint(e: Estate, svc: str = "redis") -> tuple[str, str]:
    return e.redis("DBSIZE", svc=svc), e.redis("DEBUG", "DIGEST", svc=svc)


def run_tool(module, argv: list[str], capfd) -> tuple[int, str]:
    rc = module.main(argv)
    out = capfd.readouterr()
    return rc, out.out + out.err


def backup_id(output: str) -> str:
    m = re.search(r"^backup-id: (\S+)$", output, re.M)
    assert m, output
    return m.group(1)


def calls(e: Estate) -> list[list[str]]:
    return [json.loads(l) for l in e.fake_log.read_text().splitlines()] if e.fake_log.exists() else []


def retention_keep(has: dict[str, str], new: str, daily: int, weekly: int) -> set[str]:
    """The retention reference: of the backups `has` (id -> the services it holds, space-separated), the ones
    a run that made `new` keeps: `new`, the newest, and per service the newest of each of its last `daily`
    days and `weekly` ISO weeks."""
    ours = sorted(has, reverse=True)
    keep = {new, ours[0]}
    for svc in {s for h in has.values() for s in h.split()}:
        days, weeks = [], []
        for b in ours:
            if svc not in has[b].split():
                continue
            day = b[:8]
            week = time.strftime("%G-%V", time.strptime(b[:8], "%Y%m%d"))
            if len(days) < daily and day not in days:
                days.append(day)
                keep.add(b)
            if len(weeks) < weekly and week not in weeks:
                weeks.append(week)
                keep.add(b)
    return keep


# --------------------------------------------------------------------------------------- the drills

def test_full_drill_backup_destroy_restore_compare(estate, capfd):
    e = estate
    seed_postgres(e)
    keys = {svc: seed_redis(e, svc) for svc in REDISES}
    e.qdrant.collections.update({"memories": b"vectors-of-memories" * 100, "code_chunks": b"code-vectors" * 50})
    e.qdrant.aliases[:] = [("current", "memories")]
    pg_before = pg_fingerprint(e)
    redis_before = {svc: redis_fingerprint(e, svc) for svc in REDISES}
    qdrant_before = dict(e.qdrant.collections)
    assert {svc: int(fp[0]) for svc, fp in redis_before.items()} == keys == {"redis": 450, "worker-redis": 270}
    assert redis_before["redis"][1] != redis_before["worker-redis"][1]

    sampler = CmdlineSampler(PG_PASSWORD)
    others = [CmdlineSampler(REDIS_PASSWORD), CmdlineSampler(WORKER_REDIS_PASSWORD), CmdlineSampler(QDRANT_KEY)]
    for s in (sampler, *others):
        s.start()
    try:
        rc, out = run_tool(backup_tool, ["-s", STACK, "--file", str(e.stack_file)], capfd)
        assert rc == 0, out
        bid = backup_id(out)
        grafana_at_backup = grafana_state(e.target / bid / "grafana" / "grafana.db")

        # Destroy: every service loses or changes what it held.
        e.psql("DROP TABLE tags; DELETE FROM items WHERE id % 2 = 0; UPDATE items SET name = 'gone';")
        for svc in REDISES:
            e.redis("FLUSHALL", svc=svc)
            e.redis("SET", "junk", "after the backup", svc=svc)
        e.qdrant.collections["memories"] = b"overwritten"
        del e.qdrant.collections["code_chunks"]
        time.sleep(0.3)  # the Grafana writer moves on past the backup
        live = sqlite3.connect(e.appdata / "grafana" / "grafana.db", timeout=30)
        live.execute("CREATE TABLE marks (made_after_the_backup int)")
        live.commit()
        live.close()

        restored = {}
        for svc in ("postgres", "redis", "worker-redis", "qdrant", "grafana"):
            rc, restored[svc] = run_tool(restore_tool, ["-s", STACK, "--file", str(e.stack_file), "--service", svc,
                                                        "--backup", bid, "--yes"], capfd)
            assert rc == 0, restored[svc]
    finally:
        for s in (sampler, *others):
            s.done.set()
            s.join()

    assert pg_fingerprint(e) == pg_before
    for svc in REDISES:
        assert redis_fingerprint(e, svc) == redis_before[svc] and e.redis("GET", "junk", svc=svc) == "", svc
    assert e.qdrant.collections == qdrant_before
    # Grafana came back as it was in the backup: its writer, restarted, goes on from there, so the rows of the
    # backup are there as they were and the table made after the backup is not.
    b_n, b_rows, b_ok, b_digest = grafana_at_backup
    assert b_ok == "ok" and b_n == b_rows > 0, "the paused copy is one committed state"
    assert e.docker("pause", "drill-grafana").returncode == 0
    try:
        n, rows, ok, digest = grafana_state(e.appdata / "grafana" / "grafana.db", upto=b_rows)
    finally:
        e.docker("unpause", "drill-grafana")
    assert ok == "ok" and n == rows >= b_rows
    assert digest == b_digest, "the rows of the backup, and no table made after it"

    # What it printed: every step, and what it moved aside instead of deleting.
    assert "pg_restore --clean --if-exists --single-transaction" in restored["postgres"]
    for svc, r in REDISES.items():
        assert f"{svc}: stopping {r.container}" in restored[svc] and f"{keys[svc]} keys in db 0" in restored[svc]
    assert "collection memories recovered" in restored["qdrant"] and "current" in restored["qdrant"]
    assert "grafana: stopping drill-grafana" in restored["grafana"]
    for svc, data in (("redis", "redis"), ("worker-redis", "worker-redis"), ("grafana", "grafana")):
        assert re.search(rf"moved the current files aside to {re.escape(str(e.appdata / data))}/before-restore-",
                         restored[svc])
    # No password or key was ever on a command line, through SSH, docker exec, pg_dump, curl or redis-cli.
    for s in (sampler, *others):
        assert s.samples > 0 and s.seen == [], s.seen
    # Grafana was paused for the copy, and unpaused again.
    ops = [c[0] for c in calls(e) if c[-1] == "drill-grafana" and c[0] in ("pause", "unpause")]
    assert ops[:2] == ["pause", "unpause"]


def test_the_manifest_lists_every_file_with_its_size_and_sha256(estate, capfd):
    e = estate
    for svc in REDISES:
        seed_redis(e, svc)
    rc, out = run_tool(backup_tool, ["-s", STACK, "--file", str(e.stack_file)], capfd)
    assert rc == 0, out
    d = e.target / backup_id(out)
    manifest = json.loads((d / "manifest.json").read_text())
    assert manifest["format"] == "octollm-backup/1" and manifest["stack"] == STACK and manifest["reason"] == "on demand"
    assert manifest["services"] == ["postgres", "redis", "worker-redis", "qdrant", "grafana"]
    assert "paused" in manifest["methods"]["grafana"]
    for svc in REDISES:
        assert "BGSAVE" in manifest["methods"][svc], manifest["methods"]
        assert f"{REDISES[svc].strings + 150} keys in db 0" in manifest["methods"][svc], manifest["methods"]
    on_disk = {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()} - {
        "manifest.json", "SHA256SUMS", ".octollm-backup"}
    assert {f["path"] for f in manifest["files"]} == on_disk
    import hashlib
    for f in manifest["files"]:
        data = (d / f["path"]).read_bytes()
        assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest(), f["path"]
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=d).returncode == 0
    assert {"postgres/octollm.dump", "redis/dump.rdb", "worker-redis/dump.rdb", "qdrant/memories.snapshot",
            "grafana/grafana.db"} <= on_disk
    for svc in REDISES:
        assert any(p.startswith(f"{svc}/appendonlydir/") for p in on_disk), svc
    assert oct(d.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("svc", sorted(REDISES))
def test_a_damaged_backup_is_not_restored(estate, capfd, svc):
    e = estate
    seed_redis(e, svc)
    rc, out = run_tool(backup_tool, ["-s", STACK, "--file", str(e.stack_file), "--services", svc], capfd)
    assert rc == 0, out
    bid = backup_id(out)
    rdb = e.target / bid / svc / "dump.rdb"
    data = bytearray(rdb.read_bytes())
    data[len(data) // 2] ^= 0xFF
    rdb.write_bytes(bytes(data))
    e.redis("SET", "after", "1", svc=svc)
    before = redis_fingerprint(e, svc)
    rc, out = run_tool(restore_tool, ["-s", STACK, "--file", str(e.stack_file), "--service", svc,
                                      "--backup", bid, "--yes"], capfd)
    assert rc != 0 and f"backup {bid}: {svc}'s files do not match their sha256" in out
    assert redis_fingerprint(e, svc) == before, "nothing was touched"
    assert not any(c[:1] == ["stop"] and c[-1] == REDISES[svc].container for c in calls(e)[-5:])
    # A service the backup does not hold is refused as well.
    rc, out = run_tool(restore_tool, ["-s", STACK, "--file", str(e.stack_file), "--service", "postgres",
                                      "--backup", bid, "--yes"], capfd)
    assert rc != 0 and "holds no postgres" in out


def test_a_plain_rdb_swap_restores_nothing(estate, tmp_path):
    """Why the restore also writes the RDB as the AOF's base: with appendonly yes, Redis 7 loads its AOF and
    ignores dump.rdb. The seed's restore (copy dump.rdb in, restart) brings back what the AOF holds, not the
    backup; with the AOF removed as well, Redis starts empty. Both, against a real redis-server."""
    d = tmp_path / "data"
    d.mkdir()
    port = free_port()
    conf = tmp_path / "r.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\nappendonly yes\nappendfsync always\n")

    def cli(*a):
        return subprocess.run(["redis-cli", "-p", str(port), *a], capture_output=True, text=True).stdout.strip()

    def up():
        p = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
        for _ in range(100):
            if cli("PING") == "PONG":
                return p
            time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def down(p):
        p.terminate()
        p.wait()

    p = up()
    for i in range(20):
        cli("SET", f"k{i}", "backed-up")
    cli("SAVE")
    backup = (d / "dump.rdb").read_bytes()
    cli("FLUSHALL")
    cli("SET", "after", "the backup")
    down(p)
    (d / "dump.rdb").write_bytes(backup)  # the seed's restore: the RDB copied in, then a restart
    p = up()
    try:
        assert cli("DBSIZE") == "1" and cli("GET", "after") == "the backup", "the AOF won, the backup did not"
    finally:
        down(p)
    shutil.rmtree(d / "appendonlydir")
    (d / "dump.rdb").write_bytes(backup)  # and without the AOF
    p = up()
    try:
        assert cli("DBSIZE") == "0"
    finally:
        down(p)


def test_retention_keeps_the_newest_and_never_touches_what_it_did_not_make(estate, capfd, tmp_path):
    e = estate
    target = tmp_path / "retention"
    target.mkdir()
    now = time.time()

    def fake_backup(days_ago: float, services: str, stack: str = STACK, at: int | None = None) -> str:
        bid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now - days_ago * 86400 if at is None else at))
        d = target / bid
        d.mkdir()
        (d / "manifest.json").write_text("{}")
        (d / ".octollm-backup").write_text(f"stack={stack}\nservices={services}\nreason=seeded\n")
        return bid

    # Backups of this stack, two a day for 40 days; a postgres-only one (a before-plan backup) yesterday.
    seeded = {fake_backup(day + half, "postgres redis qdrant grafana") for day in range(1, 41) for half in (0, 0.5)}
    partial = fake_backup(0.9, "postgres")
    # The workers' Redis, backed up alone (before a plan) twice on one day 20 days ago: the later one is the newest
    # copy of that service, kept however old; the earlier one, of the same day and week, is not.
    day20 = (int(now) // 86400 - 20) * 86400

    def free_second(t: int) -> int:
        while (target / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))).exists():
            t += 1
        return t
    worker_old = fake_backup(0, "worker-redis", at=free_second(day20 + 10 * 3600))
    worker_new = fake_backup(0, "worker-redis", at=free_second(day20 + 11 * 3600))
    # Things the job did not make: another stack's backup, a directory without marker, a symlink and a file
    # named like a backup, an unfinished one, and an ordinary directory.
    other_stack = fake_backup(30.3, "postgres", stack="other")
    bare = target / "20200101T000000Z"
    bare.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    (outside / ".octollm-backup").write_text(f"stack={STACK}\nservices=redis\n")
    (target / "20200102T000000Z").symlink_to(outside)
    (target / "20200103T000000Z").write_text("a file")
    (target / ".20200104T000000Z.partial").mkdir()
    (target / "keep-me").mkdir()
    spec = scripts.BackupSpec(STACK, str(target), keep_daily=7, keep_weekly=4,
                              redis=("drill-redis", str(e.appdata / "redis")))
    env = {"PATH": f"{e.base / 'fakebin'}:/usr/bin:/bin", "FAKE_DOCKER_CONF": str(e.base / "fake-docker.json")}
    out = subprocess.run(["bash", "-s"], input=scripts.backup(spec), capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    new = backup_id(out.stdout)
    left = {p.name for p in target.iterdir()}
    ours = sorted(seeded | {partial, new, worker_old, worker_new}, reverse=True)

    has = {b: ("postgres redis qdrant grafana" if b in seeded else "postgres" if b == partial
               else "worker-redis" if b in (worker_old, worker_new) else "redis") for b in ours}
    kept = left & set(ours)
    assert kept == retention_keep(has, new, daily=7, weekly=4)
    assert partial in kept, "a backup that is the newest of its day for one service is kept"
    assert worker_new in kept and worker_old not in kept, "the workers' Redis has its own daily copies"
    assert len([b for b in kept if b in seeded]) <= 7 + 4
    for foreign in (other_stack, bare.name, "20200102T000000Z", "20200103T000000Z", ".20200104T000000Z.partial",
                    "keep-me"):
        assert foreign in left, foreign
    assert (outside / "manifest.json").exists()
    assert out.stdout.count("pruned ") == len(ours) - len(kept)


def test_a_zfs_target_is_snapshotted_and_pruned_with_its_backups(estate, tmp_path):
    e = estate
    target = tmp_path / "zfs-target"
    target.mkdir()
    zlog = tmp_path / "zfs.log"
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "zfs").write_text(f'#!/bin/bash\necho "$*" >> {zlog}\n'
                              f'[ "$1" = list ] && grep -qx "snapshot ${{@: -1}}" {zlog}\nexit 0\n')
    (stub / "zfs").chmod(0o755)
    for day in (3, 2):  # two older backups of another day each
        bid = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - day * 86400))
        (target / bid).mkdir()
        (target / bid / "manifest.json").write_text("{}")
        (target / bid / ".octollm-backup").write_text(f"stack={STACK}\nservices=redis\n")
        with zlog.open("a") as f:
            f.write(f"snapshot tank/backups@octollm-backup-{bid}\n")
    spec = scripts.BackupSpec(STACK, str(target), zfs_dataset="tank/backups", keep_daily=2,
                              redis=("drill-redis", str(e.appdata / "redis")))
    env = {"PATH": f"{stub}:{e.base / 'fakebin'}:/usr/bin:/bin", "FAKE_DOCKER_CONF": str(e.base / "fake-docker.json")}
    out = subprocess.run(["bash", "-s"], input=scripts.backup(spec), capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    new = backup_id(out.stdout)
    log = zlog.read_text().splitlines()
    assert f"snapshot tank/backups@octollm-backup-{new}" in log
    destroyed = [l for l in log if l.startswith("destroy ")]
    assert len(destroyed) == 1 and destroyed[0].startswith("destroy tank/backups@octollm-backup-")
    assert len([p for p in target.iterdir() if not p.name.startswith(".")]) == 2


def test_before_plan_backs_up_only_what_the_plan_replaces(estate, capfd, tmp_path):
    e = estate
    seed_postgres(e)
    urn = f"urn:pulumi:{STACK}::octollm-infra::octollm:index:DataServices$docker:index/container:Container"
    workers = f"urn:pulumi:{STACK}::octollm-infra::octollm:index:WorkerInfra$docker:index/container:Container"
    plan = {"manifest": {}, "resourcePlans": {
        f"{urn}::data-postgres": {"goal": {}, "steps": ["delete-replaced", "replace", "create-replacement"]},
        f"{workers}::workers-redis": {"goal": {}, "steps": ["delete-replaced", "replace", "create-replacement"]},
        f"{urn}::data-redis": {"goal": {}, "steps": ["same"]},
        f"urn:pulumi:{STACK}::octollm-infra::docker:index/remoteImage:RemoteImage::box-image-postgres":
            {"steps": ["replace"]}}}
    pf = tmp_path / "plan.json"
    pf.write_text(json.dumps(plan))
    rc, out = run_tool(backup_tool, ["-s", STACK, "--file", str(e.stack_file), "--before-plan", str(pf)], capfd)
    assert rc == 0, out
    bid = backup_id(out)
    assert f"backed up postgres, worker-redis before the plan: box:{e.target}/{bid}" in out
    assert f"--service postgres --backup {bid}" in out and f"--service worker-redis --backup {bid}" in out
    manifest = json.loads((e.target / bid / "manifest.json").read_text())
    assert manifest["services"] == ["postgres", "worker-redis"]
    assert manifest["reason"] == "before plan: replace data-postgres, replace workers-redis"
    # A plan that replaces no stateful container takes no backup.
    plan["resourcePlans"].pop(f"{urn}::data-postgres")
    plan["resourcePlans"].pop(f"{workers}::workers-redis")
    pf.write_text(json.dumps(plan))
    before = sorted(p.name for p in e.target.iterdir())
    rc, out = run_tool(backup_tool, ["-s", STACK, "--file", str(e.stack_file), "--before-plan", str(pf)], capfd)
    assert rc == 0 and "no data backup is needed" in out
    assert sorted(p.name for p in e.target.iterdir()) == before


def test_a_failed_backup_leaves_nothing_half_made_and_unpauses(estate, capfd):
    e = estate
    before = sorted(p.name for p in e.target.iterdir())
    e.docker("stop", "drill-redis")
    try:
        rc, out = run_tool(backup_tool, ["-s", STACK, "--file", str(e.stack_file)], capfd)
    finally:
        e.docker("start", "drill-redis")
    assert rc != 0 and "redis: container drill-redis is not running" in out
    assert sorted(p.name for p in e.target.iterdir()) == before, "no partial backup is left"
    st = json.loads((e.state / "drill-grafana.json").read_text())
    assert st["paused"] is False
    for _ in range(100):
        try:
            if e.redis("PING") == "PONG":
                break
        except AssertionError:
            pass
        time.sleep(0.1)


def test_list_shows_the_backups(estate, capfd):
    e = estate
    rc, out = run_tool(restore_tool, ["-s", STACK, "--file", str(e.stack_file), "--list"], capfd)
    assert rc == 0, out
    rows = [l.split()[0] for l in out.splitlines()[1:] if l.strip()]
    assert rows and all(re.fullmatch(r"\d{8}T\d{6}Z", r) for r in rows)
    assert "on demand" in out


def test_grafana_is_copied_online_where_the_image_has_sqlite3(estate, tmp_path):
    e = estate
    conf = json.loads((e.base / "fake-docker.json").read_text())
    ctr = conf["containers"]["drill-grafana"]
    with_sqlite = Path(tmp_path / "bin")
    with_sqlite.mkdir()
    (with_sqlite / "sh").symlink_to("/bin/sh")
    (with_sqlite / "sqlite3").symlink_to(shutil.which("sqlite3"))
    conf["containers"]["drill-grafana"] = {**ctr, "bin": str(with_sqlite)}
    conf_file = tmp_path / "fake-docker.json"
    conf_file.write_text(json.dumps(conf))
    target = tmp_path / "t"
    target.mkdir()
    spec = scripts.BackupSpec(STACK, str(target), keep_daily=1, grafana=("drill-grafana", str(e.appdata / "grafana")))
    out = subprocess.run(["bash", "-s"], input=scripts.backup(spec), capture_output=True, text=True, timeout=300,
                         env={"PATH": f"{e.base / 'fakebin'}:/usr/bin:/bin", "FAKE_DOCKER_CONF": str(conf_file)})
    assert out.returncode == 0, out.stderr
    assert "grafana: sqlite3 VACUUM INTO (an online copy) inside the running container" in out.stdout
    n, rows, ok, _ = grafana_state(target / backup_id(out.stdout) / "grafana" / "grafana.db")
    assert ok == "ok" and n == rows > 0
    assert not (e.appdata / "grafana" / ".octollm-backup.db").exists()


def test_a_failure_while_grafana_is_paused_unpauses_it(estate, tmp_path):
    e = estate
    stub = tmp_path / "bin"
    stub.mkdir()
    # A cp that fails on Grafana's database: the script dies in the middle of the paused copy.
    (stub / "cp").write_text('#!/bin/bash\ncase "$*" in *grafana.db*) echo "cp: disk full" >&2; exit 1 ;; esac\n'
                             'exec /bin/cp "$@"\n')
    (stub / "cp").chmod(0o755)
    target = tmp_path / "t"
    target.mkdir()
    spec = scripts.BackupSpec(STACK, str(target), keep_daily=1, grafana=("drill-grafana", str(e.appdata / "grafana")))
    out = subprocess.run(["bash", "-s"], input=scripts.backup(spec), capture_output=True, text=True, timeout=300,
                         env={"PATH": f"{stub}:{e.base / 'fakebin'}:/usr/bin:/bin",
                              "FAKE_DOCKER_CONF": str(e.base / "fake-docker.json")})
    assert out.returncode != 0 and "disk full" in out.stderr
    ops = [c[0] for c in calls(e) if c[-1] == "drill-grafana" and c[0] in ("pause", "unpause")]
    assert ops[-2:] == ["pause", "unpause"], "the trap unpaused it"
    assert json.loads((e.state / "drill-grafana.json").read_text())["paused"] is False
    assert list(target.iterdir()) == [target / ".octollm-backup.lock"], "no partial backup is left"
