"""A single-node Slurm cluster on this machine, for tests and demos of `hydra/launcher=slurm`.

    .venv/bin/python cluster/slurm.py start --dir /tmp/slurm    # prints the SLURM_CONF path
    export SLURM_CONF=/tmp/slurm/slurm.conf
    .venv/bin/python -m runner -m hydra/launcher=slurm seed=1,2 tracking.uri=http://...
    .venv/bin/python cluster/slurm.py stop --dir /tmp/slurm

`start` (as root) installs Debian's `slurm-wlm` and `munge` if missing, starts munged, writes
a slurm.conf for this host (its node line from `slurmd -C`; no systemd, no cgroups, no
accounting), starts slurmctld and slurmd, and waits for the node to be idle. Without
accounting (slurmdbd) submitit cannot ask `sacct` for a finished job's state and warns so on
every poll; the runner's own records (each job's MLflow run, its fingerprint) still say which
jobs finished. `stop` stops the daemons started under DIR.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from host import apt_install, free_port, stop_process  # cluster/host.py, beside this script

PACKAGES = ["slurm-wlm", "munge"]
CONF = """\
ClusterName=runner
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
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


def install() -> None:
    """Debian's Slurm and munge, if missing (root and apt-get needed)."""
    if not (shutil.which("slurmctld") and shutil.which("munged")):
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
    conf = folder / "slurm.conf"
    conf.write_text(
        CONF.format(
            host=host, dir=folder, node=node_line, ctld_port=free_port(), d_port=free_port()
        )
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
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
    """Stop slurmd and slurmctld started under `folder` (their jobs go with them)."""
    folder = folder.resolve()
    for name in ("slurmd", "slurmctld"):
        stop_process(folder / f"{name}.pid")


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
