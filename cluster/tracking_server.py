"""A team tracking server for tests and demos: `mlflow server` on a PostgreSQL backend store,
artifacts served by the server (`--artifacts-destination`).

    .venv/bin/python cluster/tracking_server.py start --dir /tmp/team [--port 5000] [--auth]
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
"""

from __future__ import annotations

import argparse
import glob
import os
import secrets
import shutil
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


def start(folder: Path, port: int | None, auth: bool = False) -> str:
    """Start PostgreSQL and the MLflow server under `folder`; returns the tracking URI."""
    account = admin_account() if auth else None
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
        str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend, "--artifacts-destination", str(folder / "artifacts"),
        "--workers", "1",
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
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            lines = (folder / "mlflow-server.log").read_text(errors="replace").splitlines()
            last = lines[-1] if lines else "(nothing logged)"
            sys.exit(f"the MLflow server exited: {last}\nsee {folder / 'mlflow-server.log'}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
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
        "--auth", action="store_true",
        help="start: logins, the admin from MLFLOW_TRACKING_USERNAME / _PASSWORD",
    )  # fmt: skip
    args = parser.parse_args()
    if args.action == "start":
        print(start(args.dir, args.port, args.auth), flush=True)
    else:
        stop(args.dir, args.purge)


if __name__ == "__main__":
    main()
