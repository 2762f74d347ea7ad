"""The tracker's calls are written in three places (the `Tracker` Protocol, the companion's
client, the companion's server): they must agree, or a call is lost in the pipe."""

from __future__ import annotations

import inspect
import re

from runner.tracking import Tracker, companion, companion_server
from runner.tracking.companion import CompanionTracker
from runner.tracking.mlflow_tracker import MlflowTracker

# What the server handles itself rather than forwarding to its MlflowTracker.
SERVER_OWN = {"open", "end", "sync", "yield_cpu"}


def public_methods(cls: type) -> set[str]:
    return {
        name for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }  # fmt: skip


def test_both_trackers_implement_every_call_of_the_protocol():
    protocol = public_methods(Tracker)
    assert protocol  # (the Protocol's methods are found at all)
    assert protocol <= public_methods(CompanionTracker), protocol - public_methods(CompanionTracker)
    assert protocol <= public_methods(MlflowTracker), protocol - public_methods(MlflowTracker)


def test_every_call_the_client_sends_is_one_the_server_runs():
    source = inspect.getsource(companion)
    sent = set(re.findall(r'self\._(?:send|ask|ask_collecting)\("(\w+)"', source))
    sent |= set(re.findall(r'\.send\("(\w+)"', source))
    assert {"start", "log_metrics", "end"} <= sent  # the pattern finds the calls
    known = companion_server.FORWARDED | set(companion_server.UNPICKLED) | SERVER_OWN
    assert sent <= known, f"sent but not served: {sent - known}"


def test_every_forwarded_call_is_a_method_of_the_server_side_tracker():
    served = companion_server.FORWARDED | set(companion_server.UNPICKLED.values())
    missing = served - public_methods(MlflowTracker)
    assert not missing, missing
