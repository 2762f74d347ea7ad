"""Write a stacked group's member runs from several processes at once.

A member run's store writes are Python-heavy (MLflow's ORM turns each of its thousand
metric points into an object), and the launching process is idle once the group has
trained: forked copies of it, each writing its share of the members, use the other cores.
"""

import logging
import os
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger("runner.sweep")
Item = TypeVar("Item")
MAX_WRITERS = 4  # more processes only wait on the store's write lock


def writer_count(items: int) -> int:
    """How many processes write `items` runs: one per core, where fork exists."""
    if not hasattr(os, "fork"):
        return 1
    return max(1, min(items, os.cpu_count() or 1, MAX_WRITERS))


def write_in_parallel(
    write: Callable[[list[Item]], dict[int, Any]], shares: Sequence[list[Item]]
) -> dict[int, Any]:
    """`write(share)` for each share, the first in this process and the others in forked
    children; returns every share's results merged (a child that died gives none)."""
    children = []
    for share in shares[1:]:
        reader, writer = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: write its share, send the results, leave at once
            os.close(reader)
            code = 0
            try:
                _child_setup()
                results = write(share)
            except BaseException:
                log.exception("a member writer process failed")
                results, code = {}, 1
            with os.fdopen(writer, "wb") as out:
                pickle.dump(results, out)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        os.close(writer)
        children.append((pid, reader))
    results = write(list(shares[0])) if shares else {}
    for pid, reader in children:
        with os.fdopen(reader, "rb") as source:
            try:
                results.update(pickle.load(source))
            except EOFError:
                log.error("a member writer process (pid %d) died; its runs are not logged", pid)
        os.waitpid(pid, 0)
    return results


def _child_setup() -> None:
    """What a forked writer must not inherit: the parent's store connections and torch's
    thread pool (as PyTorch's own forked workers, it uses one thread)."""
    import torch

    from runner.tracking.store import forget_connections

    torch.set_num_threads(1)
    forget_connections()
