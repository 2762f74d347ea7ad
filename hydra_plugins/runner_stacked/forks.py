"""Shares of a stacked sweep's work in forked copies of this process, one per core.

Once a sweep's jobs are prepared, the launching process holds every job's data and model:
forked copies of it can train other chunks, or write other members' runs, on the other
cores without preparing anything again. Used for the members' store writes (Python-heavy:
the process would otherwise wait on one core), to open the members' runs while their group
trains, and for chunks of different groups.
"""

import logging
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from runner.training import signals, sweep_signals
from runner.training.fast_exit import fast_exit

log = logging.getLogger("runner.sweep")
Item = TypeVar("Item")
MAX_WRITERS = 4  # more processes writing runs only wait on the store's write lock


def fork_count(items: int, limit: int | None = None) -> int:
    """How many processes share `items`: one per core (at most `limit`), where fork exists."""
    from runner.training.device import usable_cores

    if not hasattr(os, "fork"):
        return 1
    return max(1, min(items, usable_cores(), limit or items))


def run_in_forks(
    work: Callable[[list[Item]], dict[int, Any]],
    shares: Sequence[list[Item]],
    interruptible: bool = False,
) -> dict[int, Any]:
    """`work(share)` for each share, the first in this process and the others in forked
    children (one torch thread each); returns every share's results merged (a child that
    died gives none, and says so in the log). `interruptible`: Ctrl-C stops the children's
    work (training stops after its epoch, as a job's); else they finish it (writing runs)."""
    children = [in_fork(work, share, interruptible) for share in shares[1:]]
    results: dict[int, Any] = {}
    try:
        results = work(list(shares[0])) if shares else {}
    finally:  # interrupted too: the children, signalled as well, end their runs first
        with signals.shielded(deliver=False):
            for collect in children:
                results.update(collect())
    return results


def in_fork(
    work: Callable[[list[Item]], dict[int, Any]], share: list[Item], interruptible: bool = False
) -> Callable[[], dict[int, Any]]:
    """Start `work(share)` in a forked child (one torch thread); returns what waits for its
    results (none, said in the log, if it died). `interruptible`: SIGINT/SIGTERM reach the
    child (as a job's process); else it ignores them and finishes (its parent ends the
    sweep)."""
    reader, writer = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: its share, its results down the pipe, and leave at once
        os.close(reader)
        code = 0
        try:
            sweep_signals.child_signals("defer" if interruptible else None)
            _child_setup()
            results = work(share)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: its runs are ended KILLED already
            results, code = {}, 130
        except BaseException:
            log.exception("a sweep worker process failed")
            results, code = {}, 1
        with os.fdopen(writer, "wb") as out:
            pickle.dump(results, out)
        fast_exit(code)
    os.close(writer)

    def collect() -> dict[int, Any]:
        with os.fdopen(reader, "rb") as source:
            try:
                results = pickle.load(source)
            except EOFError:
                log.error("a sweep worker process (pid %d) died; its jobs have no result", pid)
                results = {}
        os.waitpid(pid, 0)
        return results

    return collect


def _child_setup() -> None:
    """What a forked child must not inherit: the parent's store connections and torch's
    thread pool (as PyTorch's own forked workers, it uses one thread)."""
    import torch

    from runner.tracking.store import forget_connections

    torch.set_num_threads(1)
    forget_connections()
