"""How much RAM this machine can still give: what the loop's data path and the table
encoder's size check both judge against."""

from __future__ import annotations


def available_host_memory() -> int | None:
    """Bytes of RAM this machine can still give (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
