"""What the cluster scripts need from this host: Debian packages, free ports, their databases'
folders, stopping the daemons they started. Imported by the scripts beside it (run as
`python cluster/<script>.py`).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    """A local TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_home(
    record: Path, prefix: str, owner: str | None = None, here: Path | None = None
) -> Path:
    """A database's folder, named by the file `record` (DIR/<name>.path) once made: `here`,
    or a new folder under the temp folder, private to `owner` (else root), where a service
    user may go (it may not enter DIR's parents, e.g. pytest's 0700 ones)."""
    if record.exists():
        return Path(record.read_text())
    home = here
    if home is None:
        home = Path(tempfile.mkdtemp(prefix=prefix))  # mode 0700
        if owner is not None:
            shutil.chown(home, owner, owner)
    record.write_text(str(home))
    return home


def apt_install(packages: list[str], what: str) -> None:
    """Install Debian packages (as root, with apt-get), or exit with one line saying why
    `what` is not installed (the tests skip on a line containing "is not installed")."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"{what} is not installed: install Debian's {' and '.join(packages)} (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # another script may be installing too
    # One install at a time from these scripts (tests start services side by side): the
    # second waits, then finds its packages there.
    with open(Path(tempfile.gettempdir()) / "runner-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for command in (
            ["apt-get", *wait, "update", "-qq"],
            ["apt-get", *wait, "install", "-y", "-qq", "--no-install-recommends", *packages],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                sys.exit(f"{what} is not installed, and `{' '.join(command)}` failed: {last}")


def stop_process(pid_file: Path, group: bool = False) -> None:
    """Stop the process whose id `pid_file` holds (`group`: its whole process group):
    SIGTERM, up to 10 s to end, then SIGKILL; the file is removed."""
    if not pid_file.exists():
        return
    kill = os.killpg if group else os.kill
    try:
        pid = int(pid_file.read_text())
        kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, ValueError):
        pass  # ended (or never written whole)
    pid_file.unlink(missing_ok=True)
