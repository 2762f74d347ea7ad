"""A team tracking server for tests and demos: `mlflow server` on a PostgreSQL backend store,
artifacts served by the server (`--artifacts-destination`).

    .venv/bin/python cluster/tracking_server.py start --dir /tmp/team [--port 5000] [--auth]
        [--host 0.0.0.0 [--allowed-hosts NAME,...] [--no-auth-on-network]]
    .venv/bin/python cluster/tracking_server.py stop --dir /tmp/team [--purge]

`start` installs Debian's postgresql if it is missing (as root, with apt-get), makes a
database cluster owned by the `postgres` user (PostgreSQL refuses to run as root), starts it
on a free local port, creates the `mlflow` database, starts the MLflow server and waits for
its health check; it prints the tracking URI. `stop` stops both (`--purge`: and deletes the
database). Logs live under DIR; the database too, except a root-run server's, which lives
where the postgres user may go (DIR/pg.path names it).

`--auth`: logins (`mlflow server --app-name basic-auth`, its users in the `mlflow_auth`
database). The admin account is MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD from
the environment, the variables MLflow's client signs in with, so the same shell can run
jobs; the password is handed to the server in its environment, never written to a file.

`--host`: the address the MLflow server listens on (127.0.0.1 by default; 0.0.0.0: every
interface, so other machines reach it). Beyond loopback it must have `--auth`, or be told
`--no-auth-on-network`, and MLflow's host-header check (against DNS rebinding) is given the
names clients may use: `--allowed-hosts` (MLflow's syntax: comma-separated, `*` wildcards),
by default this machine's host name and FQDN (and the `--host` address itself), each also as
NAME:PORT, as the Host header carries it; the loopback names are always accepted. The same
names, as http:// and https:// origins, are the CORS origins the UI's own requests come
from. The URI printed names the first of them. PostgreSQL stays on 127.0.0.1: only the
MLflow server beside it talks to it.
"""

from __future__ import annotations

import argparse
import glob
import ipaddress
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from host import (
    apt_install,
    free_port,
    service_home,
    stop_process,
)  # cluster/host.py, beside this script

PG_USER = "postgres"


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs, installing Debian's package if missing."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        apt_install(["postgresql"], "PostgreSQL")
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent


def _as_postgres(
    args: list[str], check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess:
    """Run a PostgreSQL program as the postgres user when we are root (it refuses root)."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", PG_USER, "--", *args]
    return subprocess.run(args, check=check, **kwargs)  # type: ignore[call-overload]


def _pg_home(folder: Path) -> Path:
    """Where PostgreSQL keeps this server's database: DIR/pg, or, as root, a folder of the
    postgres user's own under the temp folder (it may not enter DIR's parents, e.g. pytest's
    0700 ones); DIR/pg.path says which."""
    here = None if os.geteuid() == 0 else folder / "pg"
    return service_home(folder / "pg.path", "runner-pg-", here=here)


MIN_PASSWORD = 12
AUTH_INI = """[mlflow]
default_permission = READ
database_uri = {database}
admin_username = {user}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


def admin_account() -> tuple[str, str]:
    """The admin's name and password for `--auth`, from the environment, or exit saying so."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not (user and password):
        sys.exit(
            "--auth: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the admin "
            "account; runs sign in with the same variables)"
        )
    if len(password) < MIN_PASSWORD:  # MLflow's own rule; its server would die on start
        sys.exit(f"--auth: MLFLOW_TRACKING_PASSWORD must have at least {MIN_PASSWORD} characters")
    return user, password


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("0.0.0.0", "::", "[::]")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 bracketed or not) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: whatever it resolves to, assume the network


def url_host(host: str) -> str:
    """`host` as a URL or Host header writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def with_ports(names: list[str] | tuple[str, ...], port: int) -> list[str]:
    """`names` as Host headers: each without a port also as NAME:PORT, the form clients send
    (a bare name comes only through a proxy on port 80 or 443)."""
    forms: list[str] = []
    for name in names:
        has_port = re.search(r":(\d+|\*)$", name) and not name.endswith("]")
        forms += [f for f in ([name] if has_port else [name, f"{name}:{port}"]) if f not in forms]
    return forms


def host_names(host: str, names: list[str] | None) -> list[str] | None:
    """The names clients reach a server on `host` by: `names`, by default (off loopback) this
    machine's host name and FQDN, and `host` itself unless a wildcard; None: MLflow's own
    defaults (localhost and private IPs), for a loopback server."""
    if names is not None or is_loopback(host):
        return names
    defaults = [socket.gethostname(), socket.getfqdn()]
    return defaults if host in WILDCARDS else [*defaults, url_host(host)]


def network_options(port: int, names: list[str] | None) -> list[str]:
    """`mlflow server`'s --allowed-hosts and --cors-allowed-origins for `names` (see
    host_names) and the loopback names; none for None."""
    if names is None:
        return []
    loopback = with_ports(LOOPBACK_NAMES, port)
    reached = [form for form in with_ports(names, port) if form not in loopback]
    hosts = reached + loopback
    # A browser on the UI sends its own origin with every POST (the runs search, edits),
    # which MLflow refuses unless listed; loopback origins it accepts anyway.
    origins = [f"{scheme}://{form}" for form in reached for scheme in ("http", "https")]
    options = ["--allowed-hosts", ",".join(hosts)]
    return options + (["--cors-allowed-origins", ",".join(origins)] if origins else [])


def start(
    folder: Path,
    port: int | None,
    auth: bool = False,
    host: str = "127.0.0.1",
    names: list[str] | None = None,
    no_auth_on_network: bool = False,
) -> str:
    """Start PostgreSQL and the MLflow server under `folder`, listening on `host` and
    accepting the Host headers `names` (see network_options); returns the tracking URI."""
    if not (is_loopback(host) or auth or no_auth_on_network):
        sys.exit(
            f"--host {host} opens the server to the network without logins: add --auth "
            "(with TLS in front beyond a trusted network), or --no-auth-on-network to accept it"
        )
    account = admin_account() if auth else None
    names = host_names(host, names)
    if auth and not is_loopback(host):
        print(
            "note: --auth sends passwords in clear over plain HTTP; beyond a trusted network "
            "put TLS in front (a reverse proxy)", file=sys.stderr,
        )  # fmt: skip
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    pg_bin = postgres_bin()
    home = _pg_home(folder)
    data, sockets = home / "data", home / "socket"
    pg_port = free_port()
    if not data.exists():
        data.mkdir(parents=True)
        sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (home, data, sockets):
                shutil.chown(path, PG_USER, PG_USER)
        # Local connections only, trusted: a test and demo server, not a production one.
        _as_postgres(
            [str(pg_bin / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    status = [str(pg_bin / "pg_ctl"), "-D", str(data), "status"]
    running = _as_postgres(status, check=False, capture_output=True).returncode == 0
    if running:  # only the MLflow server is (re)started, on the database already up
        pg_port = int((folder / "pg.port").read_text())
    else:
        # Loopback whatever --host is: only the MLflow server beside it talks to it.
        options = f"-p {pg_port} -k {sockets} -c listen_addresses=127.0.0.1"
        _as_postgres(
            [str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l",
             str(data / "server.log"), "-w", "start"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        (folder / "pg.port").write_text(str(pg_port))
    for database in ("mlflow", "mlflow_auth") if auth else ("mlflow",):
        _ensure_database(pg_bin, pg_port, database)
    port = port or free_port()
    backend = f"postgresql://{PG_USER}@127.0.0.1:{pg_port}/mlflow"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow_bin), "server", "--host", host.strip("[]"), "--port", str(port),
        "--backend-store-uri", backend, "--artifacts-destination", str(folder / "artifacts"),
        "--workers", "1", *network_options(port, names),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if account is not None:
        user, password = account
        ini = folder / "basic_auth.ini"  # no password in it: the server's environment has it
        database = f"postgresql://{PG_USER}@127.0.0.1:{pg_port}/mlflow_auth"
        ini.write_text(AUTH_INI.format(database=database, user=user))
        command += ["--app-name", "basic-auth"]
        env |= {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_USERNAME": user,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        }
    with open(folder / "mlflow-server.log", "ab") as log:
        server = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    (folder / "mlflow-server.pid").write_text(str(server.pid))
    # Checked through loopback when it listens everywhere; the URI printed is the one other
    # machines use: the first name they may use (MLflow refuses the others).
    wildcard = host in WILDCARDS
    local = ("127.0.0.1" if host == "0.0.0.0" else "[::1]") if wildcard else url_host(host)
    shown = next((n for n in names or [] if "*" not in n), socket.gethostname())
    uri = f"http://{with_ports([shown], port)[-1]}" if wildcard else f"http://{local}:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            lines = (folder / "mlflow-server.log").read_text(errors="replace").splitlines()
            last = lines[-1] if lines else "(nothing logged)"
            sys.exit(f"the MLflow server exited: {last}\nsee {folder / 'mlflow-server.log'}")
        try:
            with urllib.request.urlopen(f"http://{local}:{port}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        stop(folder)
        sys.exit(f"no answer from the MLflow server in 180 s; see {folder / 'mlflow-server.log'}")
    (folder / "uri").write_text(uri)
    return uri


def _ensure_database(pg_bin: Path, pg_port: int, name: str) -> None:
    """Create database `name` on the PostgreSQL server at `pg_port` unless it exists."""
    exists = _as_postgres(
        [str(pg_bin / "psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", PG_USER, "-tAc",
         f"select 1 from pg_database where datname = '{name}'"],
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if exists != "1":
        _as_postgres(
            [str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", PG_USER,
             name],
        )  # fmt: skip


def stop(folder: Path, purge: bool = False) -> None:
    """Stop the MLflow server and PostgreSQL started under `folder` (what is running);
    `purge`: delete the database too."""
    folder = folder.resolve()
    stop_process(folder / "mlflow-server.pid", group=True)
    if not (folder / "pg.path").exists():
        return  # no database made here (never started, or purged already)
    data = _pg_home(folder) / "data"
    if (data / "postmaster.pid").exists():
        _as_postgres(
            [str(postgres_bin() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    if purge:
        shutil.rmtree(data.parent, ignore_errors=True)
        (folder / "pg.path").unlink(missing_ok=True)


def main() -> None:
    """`start` or `stop` the team tracking server under --dir."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True, help="where its data and logs live")
    parser.add_argument("--port", type=int, default=None, help="the MLflow server's port")
    parser.add_argument("--purge", action="store_true", help="stop: delete the database too")
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="start: the address to listen on (default 127.0.0.1; 0.0.0.0: other machines too)",
    )  # fmt: skip
    parser.add_argument(
        "--allowed-hosts", default=None, metavar="NAME,...",
        help="start: the names clients reach it by (default: this machine's name and FQDN; "
        "localhost always)",
    )  # fmt: skip
    parser.add_argument(
        "--no-auth-on-network", action="store_true",
        help="start: allow a non-loopback --host without --auth",
    )  # fmt: skip
    parser.add_argument(
        "--auth", action="store_true",
        help="start: logins, the admin from MLFLOW_TRACKING_USERNAME / _PASSWORD",
    )  # fmt: skip
    args = parser.parse_args()
    if args.action == "start":
        names = None
        if args.allowed_hosts is not None:
            names = [name.strip() for name in args.allowed_hosts.split(",") if name.strip()]
        uri = start(args.dir, args.port, args.auth, args.host, names, args.no_auth_on_network)
        print(uri, flush=True)
    else:
        stop(args.dir, args.purge)


if __name__ == "__main__":
    main()
