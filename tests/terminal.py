"""A command in a real pseudo-terminal, run as an interactive shell runs it: in a foreground
process group of its own, so that Ctrl-C (the byte 0x03 typed at the terminal) reaches
every process of that group, as it does for a person at a keyboard; `signal_group` sends
what `timeout`, Slurm or `kill -- -PGID` send. The session leader stays, like the shell,
until the test is done, so nothing is hung up when the command exits."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from pathlib import Path

EXIT = re.compile(rb"\[exit (-?\d+)\]")
CTRL_C = b"\x03"
ROWS, COLUMNS = 24, 120


def _leader(argv: list[str], cwd: str, env: dict[str, str]) -> None:
    """The pty's session leader (the 'shell'): start the command in a process group of its
    own, hand it the terminal, wait, print its exit status, and stay."""
    # A window of a terminal's usual size (a new pty has none: 0 columns, 0 rows).
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # to take the terminal back afterwards
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a shell ignores the Ctrl-C meant for its job
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.chdir(cwd)
        os.execvpe(argv[0], argv, env)
    try:
        os.setpgid(child, child)
    except OSError:
        pass  # the child did it first
    os.tcsetpgrp(0, child)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    os.tcsetpgrp(0, os.getpgrp())
    os.write(1, f"\r\n[exit {128 - code if code < 0 else code}]\r\n".encode())
    while True:
        time.sleep(3600)


class Terminal:
    """`argv` running in a pseudo-terminal; its output is read as it comes."""

    def __init__(self, argv: list[str], cwd: str | os.PathLike, env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:
            try:
                _leader(argv, str(cwd), env)
            finally:
                os._exit(127)
        self.leader, self.fd, self.argv = pid, fd, argv
        self.output = b""
        self.code: int | None = None
        self.started = time.monotonic()

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.fd, 65536)
            except OSError:
                return
            found = EXIT.search(self.output)
            if found and self.code is None:
                self.code = int(found.group(1))

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 120) -> re.Match | None:
        """Read until the output matches `pattern` (or the command exits, or time runs out)."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern.pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = regex.search(self.output)
            if found:
                return found
            if self.code is not None:
                return None
            self._read(0.05)
        return None

    def read_for(self, seconds: float) -> None:
        """Keep reading the output for `seconds` (a terminal nobody reads blocks its writer)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._read(min(0.05, max(0.0, deadline - time.monotonic())))

    def foreground_group(self) -> int:
        """The command's process group (the terminal's foreground group while it runs)."""
        return os.tcgetpgrp(self.fd)

    def catches(self, signum: int) -> bool:
        """Whether the command (its group's leader) has a handler of its own for `signum`
        now (the kernel's caught-signals mask, /proc/PID/status SigCgt), once it runs `argv`
        (before exec, a forked process holds its parent's handlers)."""
        proc = Path("/proc") / str(self.foreground_group())
        try:
            if (proc / "cmdline").read_bytes().split(b"\0")[:-1] != [*map(os.fsencode, self.argv)]:
                return False
            status = (proc / "status").read_text()
        except OSError:
            return False
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) >> (signum - 1) & 1)

    def ctrl_c(self) -> None:
        """Type Ctrl-C: the terminal sends SIGINT to its foreground process group."""
        os.write(self.fd, CTRL_C)

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the command's whole process group (`kill -- -PGID`)."""
        os.killpg(self.foreground_group(), signum)

    def wait_exit(self, timeout: float = 120) -> int | None:
        """Read until the command exits; its exit status (None if it did not in time)."""
        deadline = time.monotonic() + timeout
        while self.code is None and time.monotonic() < deadline:
            self._read(0.1)
        return self.code

    @property
    def screen(self) -> list[str]:
        """The lines the terminal shows: a carriage return goes back to the line's start and
        writes over it, ESC [K erases the rest of the line (how a progress bar is drawn), and
        a character past the last column wraps to the next line."""
        lines: list[str] = []
        line: list[str] = []
        column = 0
        for part in re.split(r"(\x1b\[K|[\r\n])", self.output.decode(errors="replace")):
            if part == "\r":
                column = 0
            elif part == "\n":
                lines.append("".join(line))
                line, column = [], 0
            elif part == "\x1b[K":
                del line[column:]
            else:
                for char in part:
                    if column == COLUMNS:
                        lines.append("".join(line))
                        line, column = [], 0
                    line[column : column + 1] = char
                    column += 1
        return [*lines, "".join(line)]

    @property
    def text(self) -> str:
        """Everything the terminal showed, as text (line ends as the terminal writes them)."""
        return self.output.decode(errors="replace").replace("\r\n", "\n")

    def close(self) -> None:
        """End the session: a command still running is killed, then the leader."""
        if self.code is None:
            try:
                os.killpg(self.foreground_group(), signal.SIGKILL)
            except OSError:
                pass
        try:
            os.kill(self.leader, signal.SIGKILL)
            os.waitpid(self.leader, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)
