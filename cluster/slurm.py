"""A single-node Slurm cluster on this machine, for tests and demos of `hydra/launcher=slurm`.

    .venv/bin/python cluster/slurm.py start --dir /tmp/slurm    # prints the SLURM_CONF path
    export SLURM_CONF=/tmp/slurm/slurm.conf
    .venv/bin/python -m runner -m hydra/launcher=slurm seed=1,2 tracking.uri=http://...
    .venv/bin/python cluster/slurm.py stop --dir /tmp/slurm

`start` (as root) installs Debian's `slurm-wlm`, `munge`, `slurmdbd` and `mariadb-server` if
missing, starts munged, a MariaDB server of its own (its data where the mysql user may go,
DIR/mysql.path names it) and slurmdbd on it, writes a slurm.conf for this host (its node line
from `slurmd -C`; no systemd, no cgroups), starts slurmctld and slurmd, and waits for the node
to be idle. With accounting, `sacct` tells submitit how each job ended (COMPLETED, FAILED,
CANCELLED). `stop` stops the daemons started under DIR and deletes the accounting database.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from host import (  # cluster/host.py, beside this script
    apt_install,
    free_port,
    service_home,
    stop_process,
)

PACKAGES = ["slurm-wlm", "munge", "slurmdbd", "mariadb-server"]
DB_USER = "mysql"  # MariaDB runs as this user (it refuses root)
# cred_expire: a requeued job (after a time limit) waits this long, not 120 s, before it
# starts again; sched_interval: pending jobs are looked at every 2 s, not 60 s.
CONF = """\
ClusterName=runner
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=2
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={dbd_port}
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
{node} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""
# slurmdbd reads it beside slurm.conf; it holds the throwaway database's password, so it is
# readable by root only (slurmdbd refuses it otherwise).
DBD_CONF = """\
AuthType=auth/munge
DbdHost=localhost
DbdPort={dbd_port}
SlurmUser=root
PidFile={dir}/slurmdbd.pid
LogFile={dir}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=slurm
StoragePass={password}
StorageLoc=slurm_acct_db
"""


def install() -> None:
    """Debian's Slurm, munge, slurmdbd and MariaDB, if missing (root and apt-get needed)."""
    programs = ("slurmctld", "munged", "slurmdbd", "mariadbd", "mariadb-install-db")
    if not all(shutil.which(p) or Path("/usr/sbin", p).exists() for p in programs):
        apt_install(PACKAGES, "Slurm")


def start_munge() -> None:
    """munged, which Slurm authenticates with (one per machine; kept if running)."""
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0:
        return
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["/usr/sbin/mungekey", "--create"], check=True)
        shutil.chown(key, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--force"], check=True)


def _db_home(folder: Path) -> Path:
    """Where MariaDB keeps the accounting database: a folder of the mysql user's own under the
    temp folder (it may not enter DIR's parents); DIR/mysql.path says which."""
    return service_home(folder / "mysql.path", "runner-mysql-", owner=DB_USER)


def start_database(folder: Path) -> tuple[int, str]:
    """A MariaDB server for slurmdbd under `folder` (its data in `_db_home`), with the
    accounting database and a user for it; returns its port and that user's password."""
    home = _db_home(folder)
    subprocess.run(
        ["mariadb-install-db", f"--datadir={home / 'data'}", f"--user={DB_USER}",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        check=True, capture_output=True,
    )  # fmt: skip
    port, socket_path = free_port(), home / "mysqld.sock"
    with open(folder / "mariadb.log", "ab") as log:
        subprocess.Popen(
            ["runuser", "-u", DB_USER, "--", "/usr/sbin/mariadbd", "--no-defaults",
             f"--datadir={home / 'data'}", f"--socket={socket_path}", f"--port={port}",
             "--bind-address=127.0.0.1", f"--pid-file={home / 'mysqld.pid'}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    password = secrets.token_hex(12)
    setup = (
        "CREATE DATABASE IF NOT EXISTS slurm_acct_db; "
        f"CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
        f"ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
        "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
    )
    deadline = time.monotonic() + 60
    while True:
        done = subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={socket_path}", "-u", "root", "-e", setup],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode == 0:
            return port, password
        if time.monotonic() > deadline:
            sys.exit(f"MariaDB did not start in 60 s; see {folder / 'mariadb.log'}")
        time.sleep(0.3)


def start_accounting(folder: Path, dbd_port: int, env: dict[str, str]) -> None:
    """slurmdbd on its database, and this cluster registered with it (before slurmctld)."""
    db_port, password = start_database(folder)
    dbd_conf = folder / "slurmdbd.conf"
    dbd_conf.touch(mode=0o600)
    dbd_conf.chmod(0o600)
    dbd_conf.write_text(
        DBD_CONF.format(dir=folder, dbd_port=dbd_port, db_port=db_port, password=password)
    )
    subprocess.run(["slurmdbd"], check=True, env=env)
    deadline = time.monotonic() + 60
    while True:  # `sacctmgr` answers once slurmdbd is up; the cluster may exist already
        added = subprocess.run(
            ["sacctmgr", "-i", "add", "cluster", "runner"], capture_output=True, text=True, env=env
        )
        if added.returncode == 0 or "already exist" in added.stdout + added.stderr:
            return
        if time.monotonic() > deadline:
            sys.exit(f"slurmdbd did not answer in 60 s; see {folder / 'slurmdbd.log'}")
        time.sleep(0.3)


def start(folder: Path) -> Path:
    """Start a one-node cluster under `folder`; returns its slurm.conf."""
    if os.geteuid() != 0:
        sys.exit("Slurm is not installed here as a test cluster needs: run as root")
    install()
    folder = folder.resolve()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    start_munge()
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
    node_line = node.stdout.splitlines()[0]
    host = node_line.split()[0].removeprefix("NodeName=")
    conf, dbd_port = folder / "slurm.conf", free_port()
    conf.write_text(
        CONF.format(
            host=host, dir=folder, node=node_line, ctld_port=free_port(), d_port=free_port(),
            dbd_port=dbd_port,
        )
    )  # fmt: skip
    env = {**os.environ, "SLURM_CONF": str(conf)}
    start_accounting(folder, dbd_port, env)
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env
        ).stdout.strip()
        if state == "idle":
            return conf
        time.sleep(0.5)
    stop(folder)
    sys.exit(f"the Slurm node did not come up idle in 60 s; see {folder}/slurmd.log")


def stop(folder: Path) -> None:
    """Stop slurmd, slurmctld, slurmdbd and MariaDB started under `folder` (their jobs go
    with them), and delete the accounting database."""
    folder = folder.resolve()
    for name in ("slurmd", "slurmctld", "slurmdbd"):
        stop_process(folder / f"{name}.pid")
    record = folder / "mysql.path"
    if record.exists():
        home = Path(record.read_text())
        stop_process(home / "mysqld.pid")
        shutil.rmtree(home, ignore_errors=True)
        record.unlink()


def main() -> None:
    """`start` or `stop` the cluster under --dir."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--dir", type=Path, required=True, help="its config, state and logs")
    args = parser.parse_args()
    if args.action == "start":
        print(start(args.dir), flush=True)
    else:
        stop(args.dir)


if __name__ == "__main__":
    main()
