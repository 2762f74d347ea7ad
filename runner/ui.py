"""`python -m runner.ui [--store-dir DIR | --uri URI] [--port N] [--host H]`: the MLflow UI
on the runner's store, opened on the runs table of the latest experiment, its primary
metric and the params its runs were given as columns (runner.tracking.runs_view).

A light server for one person: `mlflow server` with one web worker and no job queue (its
huey consumers serve GenAI features: judges, trace rollups), its deprecation warnings and
start-up chatter silenced. MLflow 3.17's UI picks an experiment's view from the URL's
`workflowType` (else the browser's last choice, GenAI's traces at first), so the printed
URL carries `workflowType=machine_learning`; the store's experiments are also marked as
model-training ones (`runner.tracking.store.mark_training_experiments`).

This module imports neither mlflow nor torch at import time. The URLs it prints are built
by `runner.tracking.experiment_url` / `run_url`, as every run's closing line is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, NoReturn

from runner.tracking import embedded_store, experiment_url, sqlite_file
from runner.tracking.runs_view import VIEW

START_LIMIT = 60.0  # seconds the server may take to answer
STOP_LIMIT = 10.0  # seconds it may take to stop before it is killed
# `prepare` as a script: the experiment id on stdout, or one line on stderr and status 1.
PREPARE = """
import sys
from runner.ui import prepare
try:
    print(prepare(sys.argv[1]) or "")
except RuntimeError as err:
    sys.exit(str(err))
"""
LOCAL = ("127.0.0.1", "localhost", "::1")
# Lines of `mlflow server` that say nothing to one person on localhost (warnings are
# silenced at the source, see `server_env`).
CHATTER = ("[MLflow] Security middleware enabled with default settings (localhost-only)",)


def store_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """Backend store URI and artifact destination named by the command line; exits 1 with
    one line if that store does not exist yet (the server would make an empty one)."""
    if args.uri and args.uri.startswith(("http://", "https://")):
        fail(f"{args.uri} is a tracking server already: open it in a browser")
    db = sqlite_file(args.uri) if args.uri else Path(args.store_dir).expanduser() / "mlflow.db"
    if db is not None and not db.is_file():
        fail(f"no MLflow store at {db} yet: `make run` (python -m runner) makes one")
    if not args.uri:
        return embedded_store(args.store_dir)
    return args.uri, (db.parent / "mlartifacts").resolve().as_uri() if db else None


def prepare(uri: str) -> str | None:
    """Mark the store's experiments as model-training ones, hide an empty Default, and
    return the experiment of the latest run (else the latest experiment; None: none).
    Runs in a process of its own (`prepared`)."""
    from mlflow.tracking import MlflowClient

    from runner.tracking.runs_view import write_view
    from runner.tracking.store import mark_training_experiments, store_opening

    try:
        with store_opening(uri):  # an older store is migrated once, as the runner would
            client = MlflowClient(uri)
            experiments = mark_training_experiments(client, local=sqlite_file(uri) is not None)
        ids = [e.experiment_id for e in experiments]
        for experiment_id in ids:  # (each opens with its own metric and params as columns)
            write_view(client, experiment_id)
        order = ["attributes.start_time DESC"]
        latest = client.search_runs(ids, order_by=order, max_results=1) if ids else []
    except Exception as err:  # a plain error: the parent need not import mlflow to read it
        lines = str(err).strip().splitlines()
        raise RuntimeError(
            f"cannot open the MLflow store {uri}: {lines[0] if lines else repr(err)}"
        ) from None
    if latest:
        return latest[0].info.experiment_id
    if experiments:
        return max(experiments, key=lambda e: e.creation_time or 0).experiment_id
    return None


def prepared(uri: str) -> str | None:
    """`prepare` in a short-lived process (mlflow's 200 MB go with it); exits 1 with one
    line if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", PREPARE, uri], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        fail(lines[-1] if lines else f"cannot open the MLflow store {uri}")
    lines = done.stdout.strip().splitlines()
    return lines[-1] if lines else None


def server_command(uri: str, artifacts: str | None, host: str, port: int) -> list[str]:
    """`mlflow server` on the store: one worker, no access log, artifacts served."""
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--registry-store-uri", uri,
        "--host", host,
        "--port", str(port),
        "--workers", "1",
        "--uvicorn-opts", "--log-level warning --no-access-log",
    ]  # fmt: skip
    if artifacts:
        command += ["--artifacts-destination", artifacts]
    return command


def server_env() -> dict[str, str]:
    """The server's environment: no job queue, and Starlette's deprecation of the WSGI
    middleware that mlflow 3.17 still imports (one warning per worker) silenced."""
    quiet = "ignore:starlette.middleware.wsgi is deprecated"
    warnings = os.environ.get("PYTHONWARNINGS")
    return {
        **os.environ,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "PYTHONWARNINGS": f"{warnings},{quiet}" if warnings else quiet,
    }


def forward(stream: IO[str], loud: bool) -> None:
    """Copy the server's output to stderr, less its start-up chatter unless `loud`."""
    for line in stream:
        if loud or not line.startswith(CHATTER):
            sys.stderr.write(line)
            sys.stderr.flush()


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port yet."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As the server binds (uvicorn sets it): a port left in TIME_WAIT by a UI just
        # stopped is free to it, and must be to this check too.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_until_up(server: subprocess.Popen, base: str) -> None:
    """Block until the server answers its health check; exits 1 if it dies or never does."""
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail(f"the MLflow server exited with status {server.returncode} (see above)")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    stop(server)
    fail(f"the MLflow server did not answer on {base} within {START_LIMIT:.0f} s")


def stop(server: subprocess.Popen) -> None:
    """Stop the server (`mlflow server` hands SIGTERM on to uvicorn); killed if slow, or
    at a second Ctrl-C."""
    if server.poll() is not None:
        return
    try:
        server.terminate()
        server.wait(timeout=STOP_LIMIT)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # its own session: uvicorn goes with it
        server.wait()


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the UI as Ctrl-C does."""
    raise KeyboardInterrupt


def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m runner.ui", description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--store-dir", default="outputs", help="the runner's store folder")
    where.add_argument(
        "--uri", help="a backend store URI instead (sqlite:///..., postgresql://...)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=5000)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Serve the UI until Ctrl-C (or SIGTERM); 0 after a clean stop."""
    args = parse(argv)
    uri, artifacts = store_of(args)
    if not port_free(args.host, args.port):
        fail(f"port {args.port} on {args.host} is taken (a UI running already?): try --port")
    experiment_id = prepared(uri)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = f"http://{f'[{shown}]' if ':' in shown else shown}:{args.port}"
    server = subprocess.Popen(
        server_command(uri, artifacts, args.host, args.port),
        env=server_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C reaches this process only: it stops the server
    )
    loud = args.host not in LOCAL  # reachable from elsewhere: mlflow's security note matters
    threading.Thread(target=forward, args=(server.stdout, loud), daemon=True).start()
    signal.signal(signal.SIGTERM, interrupt)
    try:
        wait_until_up(server, base)
        url = (
            experiment_url(base, experiment_id, VIEW) if experiment_id else f"{base}/#/experiments"
        )
        print(f"MLflow UI: {url}  (Ctrl-C stops it)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(server)
    fail(f"the MLflow server exited with status {server.returncode} (see above)")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # before the server started: nothing to stop
        sys.exit(130)
