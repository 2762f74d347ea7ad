"""The MLflow store: opened safely while it is new (even while a process outside the runner,
such as the MLflow UI, creates it), and queried about past runs.

Queries here serve resume and sweeps: a config's FINISHED run (skip it), its runs left
RUNNING by a dead process (end them KILLED), a run's checkpoint (continue it).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Experiment, LifecycleStage, Run, ViewType
from mlflow.tracking import MlflowClient

try:
    import fcntl
except ImportError:  # Windows: no file locks here; open new stores from one process first
    fcntl = None

from runner.config.spec import TrackingSpec
from runner.errors import ConfigError, DependencyMoved, Refused, StoreError
from runner.tracking import (
    ServerUnreachable,
    check_server,
    mlflow_internals,
    sqlite_file,
    store_location,
    tags,
)

log = logging.getLogger("runner.tracking")

# A store's schema can be created by a process that does not take the runner's lock (the
# MLflow UI, a notebook's MlflowClient): opening waits for it rather than joining in.
OPEN_PATIENCE = 3.0  # seconds a store must stay unchanged to count as nobody's work in progress
OPEN_LIMIT = 60.0  # seconds at most spent waiting for another process's schema creation
OPEN_STALLED_TRIES = 2  # failed opens, with nobody changing the store, before giving up
OPEN_BLIND = 10.0  # seconds of retries for a store whose changes cannot be watched (a server)
# A store another process keeps locked (a backup, a long transaction, a slow NFS) is waited
# for this long, at its opening and at each write; RUNNER_STORE_WAIT (seconds) overrides it.
STORE_WAIT = 60.0
STORE_WAIT_ENV = "RUNNER_STORE_WAIT"
# MLflow's own mark of a model-training experiment: the experiment-kind tag, with the value
# the UI's kind selector writes for "Machine learning" (GenAI's is "genai_development").
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# "Default": mlflow makes it in every new store; the runner logs to experiments of its own.
DEFAULT_EXPERIMENT_ID = "0"
# The errors of a schema that another process is creating (or migrating) at the same time.
SCHEMA_RACE = (
    "already exists",
    "duplicate column",
    "database is locked",
    "out-of-date database schema",
    "expected to match one row",  # alembic: the version moved under its migration
    "no such table",
    "unique constraint failed",  # both made the default experiment
)

# SQLite's words for a file that is not (or no longer) a whole database.
DAMAGED = ("file is not a database", "database disk image is malformed")
# MLflow's error codes for a run or an artifact that is not there, or for a string that is
# no valid run id: the only failures of a query that mean "not there" (a server that is
# down, or that refuses the login, fails with other codes or none).
NOT_THERE = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
CHECKPOINT_ARTIFACT = "checkpoints/last.pt"  # where a run's checkpoint is logged


@contextmanager
def store_opening(uri: str) -> Iterator[None]:
    """Open a SQLite store one process at a time while it is new or needs migrating.

    Two processes that create (or migrate) the same SQLite store at once can leave it
    broken ("table _alembic_tmp_... already exists" on every later open). The first opener
    takes an exclusive lock on `<db>.lock`, lets mlflow create the schema, and writes
    mlflow's version into the lock file; later opens of a store marked with the running
    mlflow's version skip the lock.
    """
    db = sqlite_file(uri)
    if db is None or fcntl is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    marker = f"schema ready for mlflow {mlflow.__version__}\n"
    lock_path = db.with_name(db.name + ".lock")
    if db.is_file() and lock_path.is_file() and lock_path.read_text() == marker:
        yield
        return
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process creates the schema
        try:
            yield
            lock.seek(0)
            lock.truncate()
            lock.write(marker)
            lock.flush()  # written before another process may take the lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(uri: str, experiment: str, artifact_root: str | None) -> tuple[MlflowClient, str]:
    """A client on the store (created safely if new) and the experiment's id in it; any
    failure to open is a StoreError naming the store."""
    store_wait()  # a bad RUNNER_STORE_WAIT is a config error, said before any wait
    try:
        check_server(uri)
        with store_opening(uri):
            return _open_patiently(uri, experiment, artifact_root)
    except (StoreError, ServerUnreachable, DependencyMoved):
        raise
    except Exception as err:
        raise StoreError(f"cannot open the MLflow store {uri}: {_first_line(err)}") from err


def _open_patiently(
    uri: str, experiment: str, artifact_root: str | None
) -> tuple[MlflowClient, str]:
    """Open the store, waiting out another process that creates its schema meanwhile, or
    that holds a lock on it (for `store_wait()` seconds)."""
    db = sqlite_file(uri)
    started = time.monotonic()
    deadline = started + OPEN_LIMIT
    stalled = 0
    busy_since: float | None = None  # when the store was first found locked
    while True:
        try:
            if db is not None:  # after a failure nobody followed up on, it waited already
                busy_since = _await_unlocked(db, busy_since)
                _create_or_await(db, artifact_root, deadline, wait=stalled == 0)
            # A store that failed to open is not cached by mlflow: this builds it anew.
            client = MlflowClient(uri)
            return client, ensure_experiment(
                client, experiment, artifact_root, local=db is not None
            )
        except (StoreError, DependencyMoved):
            raise
        except Exception as err:
            damage = _damage_sign(err) if db is not None else None
            if damage:
                raise StoreError(damaged_message(db, damage)) from err
            if db is not None and _lock_sign(err):  # locked again: waited for at the top
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since >= store_wait():
                    raise StoreError(busy_message(db, store_wait())) from err
                continue
            # Reading a schema while another process migrates it fails in odd ways too (a
            # KeyError, "Circular dependency detected"): any error on an incomplete schema
            # counts, until nobody changes the store any more.
            race = _schema_race(err)
            if race is None and (db is None or not db.exists() or _schema_complete(db)):
                raise
            race = race or f"{type(err).__name__}: {_first_line(err)}"
            if db is None:
                time.sleep(1.0)
                progressing = time.monotonic() - started < OPEN_BLIND
            else:  # taken after the failure: changes seen now are another process's work
                progressing = _await_change(db, min(OPEN_PATIENCE, _left(deadline)))
            stalled = 0 if progressing else stalled + 1
            if stalled >= OPEN_STALLED_TRIES or _left(deadline) <= 0:
                raise StoreError(
                    f"cannot open the MLflow store {uri}: {race} (its schema stayed incomplete: "
                    "if no other process is creating it, it was left broken)"
                ) from err
            log.warning(
                "the MLflow store %s is being created by another process (%s): opening it again",
                uri, race,
            )  # fmt: skip


def _create_or_await(db: Path, artifact_root: str | None, deadline: float, wait: bool) -> None:
    """A new SQLite store appears complete or not at all; one that another process is
    creating is waited for until its schema is complete (or nobody changes it any more)."""
    if not db.exists():
        _create_aside(db, artifact_root)
    if not wait or _schema_complete(db):
        return
    damage = _damage(db)
    if damage:
        raise StoreError(damaged_message(db, damage))
    log.info("waiting for another process to finish creating the MLflow store %s", db)
    last, quiet_since = _signature(db), time.monotonic()
    while _left(deadline) > 0 and time.monotonic() - quiet_since < OPEN_PATIENCE:
        time.sleep(0.1)
        if _schema_complete(db):
            return
        now = _signature(db)
        if now != last:
            last, quiet_since = now, time.monotonic()


def _create_aside(db: Path, artifact_root: str | None) -> None:
    """Create the schema in a file of its own, then link it in place unless another process
    created the store first: no process ever sees (or migrates) a half-made schema of ours."""
    db.parent.mkdir(parents=True, exist_ok=True)
    new = db.with_name(f"{db.name}.new-{os.getpid()}")
    for leftover in (new, new.with_name(new.name + "-journal")):
        leftover.unlink(missing_ok=True)
    try:
        # (no connection left on the file once it is linked)
        mlflow_internals.create_database_store(f"sqlite:///{new}", artifact_root)
        try:
            os.link(new, db)
        except FileExistsError:
            log.info("another process created the MLflow store %s meanwhile: opening it", db)
        except OSError:  # no hard links here: a rename, not quite atomic
            if not db.exists():
                os.replace(new, db)
    finally:
        new.unlink(missing_ok=True)


def _schema_complete(db: Path) -> bool:
    """Whether every table mlflow expects is in the store (it then migrates nothing)."""
    expected = mlflow_internals.expected_tables()
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1)) as c:
            names = {row[0] for row in c.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:  # being written, or not a database yet
        return False
    return expected <= names


def store_wait() -> float:
    """Seconds a run waits for a store another process keeps locked (RUNNER_STORE_WAIT)."""
    setting = os.environ.get(STORE_WAIT_ENV, "").strip()
    if not setting:
        return STORE_WAIT
    try:
        seconds = float(setting)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # (nan too)
        raise ConfigError(
            f"{STORE_WAIT_ENV}={setting!r}: not a number of seconds; set it to how long a run "
            f"waits for a busy MLflow store, e.g. {STORE_WAIT:g}"
        )
    return seconds


def _await_unlocked(db: Path, busy_since: float | None) -> float | None:
    """Wait while another process holds a lock on the store that a write would wait for;
    returns when it was first found locked (None: never). Past `store_wait()` seconds of
    that, a StoreError says who holds the lock."""
    if not _busy(db):
        return busy_since
    limit, said = store_wait(), False
    busy_since = busy_since or time.monotonic()
    while _busy(db):
        waited = time.monotonic() - busy_since
        if waited >= limit:
            raise StoreError(busy_message(db, limit))
        if waited >= 1.0 and not said:  # (other jobs' writes lock it for moments)
            said = True
            log.warning(
                "the MLflow store %s is busy: %s; waiting up to %g s for it (%s)",
                db, lock_holder(db), limit, STORE_WAIT_ENV,
            )  # fmt: skip
        time.sleep(0.2)
    if said:
        log.info("the MLflow store %s is free again: opening it", db)
    return busy_since


def _busy(db: Path) -> bool:
    """Whether another process holds a lock on the store that a write would wait for (a
    reader's too: a write's commit waits for every reader)."""
    if not db.exists():
        return False
    try:
        with closing(
            sqlite3.connect(
                f"{db.resolve().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None
            )
        ) as probe:
            probe.execute("BEGIN EXCLUSIVE")  # taken and given back at once, or refused
            probe.execute("ROLLBACK")
    except sqlite3.Error as err:
        return _lock_sign(err)
    return False


def _lock_sign(err: BaseException) -> bool:
    """Whether the error (or one it came from) is SQLite's refusal of a locked database."""
    return any("database is locked" in str(link) for link in _chain(err))


def _damage_sign(err: BaseException) -> str | None:
    """SQLite's words in the error's chain for a file that is not a whole database."""
    for link in _chain(err):
        for sign in DAMAGED:
            if sign in str(link):
                return sign
    return None


def _damage(db: Path) -> str | None:
    """SQLite's words for a store file that is not a whole database, if it is not."""
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1)) as c:
            c.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.Error as err:
        return _damage_sign(err)
    return None


def lock_holder(db: Path) -> str:
    """Who holds a lock on the store, as this machine's /proc/locks tells: "pid 12 (python
    backup.py) holds a write lock on it", else "another process holds a lock on it" (one
    on another host, over NFS, shows nowhere here)."""
    holders: dict[int, str] = {}
    try:
        stat = db.stat()
        table = Path("/proc/locks").read_text().splitlines()
    except OSError:
        table = []
    for line in table:
        # "1: POSIX  ADVISORY  WRITE 12136 fe:00:2154633 1073741824 1073742335"; a waiter's
        # line has "->" after the number.
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            major, minor, inode = (int(part, base) for part, base in zip(
                fields[5].split(":"), (16, 16, 10), strict=True
            ))  # fmt: skip
            pid = int(fields[4])
        except ValueError:
            continue
        if (major, minor, inode) != (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino):
            continue
        if pid > 0 and holders.get(pid) != "write":
            holders[pid] = fields[3].lower()
    if not holders:
        return "another process holds a lock on it"
    pid = min(holders, key=lambda p: (holders[p] != "write", p))  # a writer first
    others = f" (and {len(holders) - 1} more processes)" if len(holders) > 1 else ""
    return f"pid {pid}{_command_of(pid)} holds a {holders[pid]} lock on it{others}"


def _command_of(pid: int) -> str:
    """' (the command line)' of a process of this machine, shortened; '' if unreadable."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    command = " ".join(w.decode(errors="replace") for w in words if w)
    return f" ({command[:77]}...)" if len(command) > 80 else f" ({command})" if command else ""


def busy_message(db: Path, waited: float | None = None) -> str:
    """One line: the store is busy, who holds it, how long it was waited for and the fix."""
    line = f"the MLflow store {db} is busy: {lock_holder(db)}"
    if waited is None:
        return line
    return f"{line}, still after {waited:g} s of waiting (set {STORE_WAIT_ENV} to wait longer)"


def damaged_message(db: Path, damage: str | None) -> str:
    """One line: the store file is damaged, SQLite's words for it, and the fix."""
    return (
        f"the MLflow store {db} is damaged (SQLite: {damage}): restore it from a backup, or "
        "move it aside to start a new one"
    )


def store_failure(uri: str, err: BaseException, waited: float | None = None) -> StoreError | None:
    """The store's own failure behind an MLflow call's error, in one line: busy (another
    process's lock outlasted the wait, `waited` seconds if known) or damaged; None for any
    other error."""
    if isinstance(err, StoreError):
        return err
    db = sqlite_file(uri)
    if db is None:
        return None
    if _lock_sign(err):
        return StoreError(busy_message(db, waited))
    damage = _damage_sign(err)
    return StoreError(damaged_message(db, damage)) if damage else None


def _signature(db: Path) -> tuple[tuple[int, int] | None, ...]:
    """What changes whenever any process writes the store."""
    signature = []
    for path in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")):
        try:
            stat = path.stat()
            signature.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            signature.append(None)
    return tuple(signature)


def _await_change(db: Path, seconds: float) -> bool:
    """Wait until the store changes (True: another process is at work) or `seconds` pass."""
    before, end = _signature(db), time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.1)
        if _signature(db) != before:
            return True
    return False


def _left(deadline: float) -> float:
    return deadline - time.monotonic()


def _chain(err: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or during."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def not_there(err: BaseException) -> bool:
    """Whether an MLflow query's error means only that the run or artifact asked for is not
    there (or that the string is no valid run id)."""
    return getattr(err, "error_code", None) in NOT_THERE and isinstance(
        err, mlflow.exceptions.MlflowException
    )


def failure_cause(err: BaseException) -> str:
    """What an MLflow call met, in a few words: the connection's failure ("Connection
    refused"), the server's HTTP status and MLflow's code for it, else the first line."""
    text = str(err)
    connection = re.search(r"\[Errno -?\d+\] ([^\"')\]]+)", text)
    if connection:
        return f"cannot connect ({connection.group(1).strip()})"
    status = re.search(r"error code (\d{3})\b", text)
    code = getattr(err, "error_code", None)
    if status:
        return f"the server answered HTTP {status.group(1)} ({code})"
    line = _first_line(err)
    line = line if len(line) <= 300 else line[:300] + "..."
    if not code or code == "INTERNAL_ERROR" or line.startswith(code):
        return line
    return f"{code}: {line}"


def _schema_race(err: BaseException) -> str | None:
    """The known sign of a concurrent schema creation in the error's chain, if any."""
    for link in _chain(err):
        text = str(link).lower()
        for sign in SCHEMA_RACE:
            if sign in text:
                return _first_line(link)
    return None


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (SQLAlchemy's add the SQL and a link)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def ensure_experiment(
    client: MlflowClient, name: str, artifact_root: str | None, local: bool = False
) -> str:
    """The experiment's id, creating it (artifacts under the store's root, marked as a
    model-training experiment) on first use; in a `local` store (a SQLite file, not a
    shared server) an empty Default is hidden then."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if local and found.experiment_id == DEFAULT_EXPERIMENT_ID and _deleted(found):
            client.restore_experiment(found.experiment_id)  # asked for by name: hidden by us
        mark_training(client, found)
        return found.experiment_id
    location = f"{artifact_root}/{name}" if artifact_root else None
    try:
        experiment_id = client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING}
        )
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(name)  # another process created it first
        if found is None:
            raise
        return found.experiment_id
    if local:  # once per new experiment: the store's first one, mostly
        hide_empty_default(client)
    return experiment_id


def mark_training(client: MlflowClient, experiment: Experiment) -> None:
    """Mark an active experiment as a model-training one unless it says its kind already
    (best effort: a run does not fail for a mark)."""
    if EXPERIMENT_KIND in experiment.tags or _deleted(experiment):
        return
    try:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
    except Exception as err:  # locked, or not ours to change on a shared server
        log.debug("left experiment %s unmarked: %s", experiment.name, _first_line(err))


def hide_empty_default(client: MlflowClient) -> None:
    """Delete (restorably) the Default experiment while it holds no run, so that the store's
    experiments list shows only the runner's: best effort, it is only in the way."""
    try:
        default = client.get_experiment(DEFAULT_EXPERIMENT_ID)
        if _deleted(default) or default.name != Experiment.DEFAULT_EXPERIMENT_NAME:
            return
        if client.search_runs([DEFAULT_EXPERIMENT_ID], run_view_type=ViewType.ALL, max_results=1):
            return
        client.delete_experiment(DEFAULT_EXPERIMENT_ID)
    except Exception as err:  # absent, locked, or another process deleted it meanwhile
        log.debug("left the Default experiment as it is: %s", _first_line(err))


def mark_training_experiments(client: MlflowClient, local: bool = True) -> list[Experiment]:
    """Mark every active experiment of the store as a model-training one (those without a
    kind) and, in a `local` store, hide an empty Default; returns the active experiments."""
    if local:
        hide_empty_default(client)
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    for experiment in experiments:
        mark_training(client, experiment)
    return experiments


def _deleted(experiment: Experiment) -> bool:
    return experiment.lifecycle_stage == LifecycleStage.DELETED


class Store:
    """An opened store and one experiment in it: the queries resume and sweeps need."""

    def __init__(self, spec: TrackingSpec) -> None:
        self.uri, artifact_root = store_location(spec)
        mlflow.set_tracking_uri(self.uri)
        self.client, self.experiment_id = open_store(self.uri, spec.experiment, artifact_root)

    def find_finished(self, fingerprint: str) -> Run | None:
        """The latest FINISHED run of this experiment with the given config fingerprint."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tags.FINGERPRINT}` = '{fingerprint}' "
            "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def find_interrupted(self, fingerprint: str, parent_run_id: str | None = None) -> Run | None:
        """The latest KILLED run of this config (a child of `parent_run_id`, if given) that
        left a checkpoint to continue from, else None."""
        query = f"tags.`{tags.FINGERPRINT}` = '{fingerprint}' and attributes.status = 'KILLED'"
        if parent_run_id is not None:
            query += f" and tags.`{tags.PARENT_RUN_ID}` = '{parent_run_id}'"
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=query,
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        if not runs or not self._has_checkpoint(runs[0]):
            return None
        return runs[0]

    def _has_checkpoint(self, run: Run) -> bool:
        if local_checkpoint(run) is not None:
            return True
        try:
            return self._checkpoint_logged(run.info.run_id)
        except StoreError as err:  # (a new run starts, as for a run without a checkpoint)
            log.warning("%s: counted as having no checkpoint to continue from", err)
            return False

    def _checkpoint_logged(self, run_id: str) -> bool:
        """Whether the run's logged artifacts hold its checkpoint; a StoreError says what
        else happened (the server down, the login refused)."""
        try:
            logged = self.client.list_artifacts(run_id, CHECKPOINT_ARTIFACT.rpartition("/")[0])
        except Exception as err:
            if not_there(err):
                return False
            raise StoreError(
                f"cannot list the logged checkpoints of run {run_id} in {self.uri}: "
                f"{failure_cause(err)}"
            ) from err
        return any(a.path == CHECKPOINT_ARTIFACT for a in logged)

    def note_interrupted(self, fingerprint: str) -> None:
        """Say, in one line, how to continue the latest interrupted run of this config (a
        new run of it is starting)."""
        run = self.find_interrupted(fingerprint)
        if run is None:
            return
        run_id = run.info.run_id
        epochs = len(self.client.get_metric_history(run_id, "train_loss"))
        again = run.data.tags.get(tags.SOURCE_NAME) or "python -m runner"
        log.warning(
            "run %s of this config was interrupted after epoch %d (KILLED); this is a new run. "
            "To continue that one instead: %s resume=%s", run_id, epochs, again, run_id,
        )  # fmt: skip

    def end_stale_runs(self, fingerprint: str, host: str) -> None:
        """Runs of this config left RUNNING by a dead process on this host are ended KILLED."""
        running = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tags.FINGERPRINT}` = '{fingerprint}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in running:
            if run.data.tags.get(tags.HOST) == host and end_if_dead(self.client, run):
                log.warning(
                    "run %s of this config was left RUNNING by a dead process: ended KILLED; "
                    "resume=%s continues it from its last checkpoint",
                    run.info.run_id, run.info.run_id,
                )  # fmt: skip

    def run_or_none(self, run_id: str, key: str) -> Run | None:
        """The run with this id, or None if the store holds none; a StoreError naming the
        config `key` that asked when the store cannot tell."""
        try:
            return self.client.get_run(run_id)
        except Exception as err:
            if not not_there(err):
                raise StoreError(
                    f"{key}: cannot read run {run_id!r} from the MLflow store {self.uri}: "
                    f"{failure_cause(err)}"
                ) from err
            return None

    def run_to_resume(self, run_id: str, checkpoint: Path | None = None) -> Run | None:
        """The run `resume=` names (or the run a checkpoint file names: None if the store
        does not hold it); refused while its process still trains it."""
        run = self.run_or_none(run_id, "resume")
        if run is None:
            if checkpoint is not None:
                return None
            raise ConfigError(
                f"resume: {run_id!r} is neither a checkpoint file nor an MLflow run id in "
                f"{self.uri}"
            )
        if run.info.status == "RUNNING" and not end_if_dead(self.client, run):
            raise Refused(f"resume: run {run_id} {still_running(run, self.uri)}, then resume")
        return run

    def logged_checkpoint(self, run_id: str) -> Path:
        """The checkpoint logged with a run, downloaded."""
        # Listed first: MLflow's download says "not found" whatever went wrong.
        if not self._checkpoint_logged(run_id):
            raise ConfigError(f"resume: run {run_id} has no checkpoint (local or logged)")
        try:
            return Path(self.client.download_artifacts(run_id, CHECKPOINT_ARTIFACT))
        except Exception as err:
            raise StoreError(
                f"resume: the checkpoint logged with run {run_id} could not be downloaded "
                f"({CHECKPOINT_ARTIFACT}): {failure_cause(err)}"
            ) from err

    def run_of_checkpoint(self, path: Path) -> str | None:
        """The run whose checkpoint tag names this file (the latest, if several did)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tags.CHECKPOINT}` = '{path.resolve()}'",
            order_by=["attributes.start_time DESC"], max_results=1,
        )  # fmt: skip
        return runs[0].info.run_id if runs else None


def local_checkpoint(run: Run) -> Path | None:
    """The checkpoint file a run's tag names, if it is still there (it may since hold
    another run's state: the caller checks the run id inside)."""
    local = Path(run.data.tags.get(tags.CHECKPOINT, "") or "/nonexistent")
    return local if local.is_file() else None


def _locked(err: Exception) -> bool:
    return "locked" in str(err)


def retry_store_write(
    write: Callable[[], Any],
    attempts: int | None = None,
    retry_if: Callable[[Exception], bool] = _locked,
    wait: float | None = None,
) -> Any:
    """Run a store write and return its result, trying again (after 0.05 s, 0.1 s, ... 1 s)
    while it fails in a way `retry_if` says passes: by default SQLite's "database is locked"
    while another process (a parallel job, the UI, a backup) holds the file, so metrics are
    not dropped for that. `attempts` times, or until `wait` seconds (default `store_wait()`)
    have passed: then a StoreError says who holds the store."""
    began, attempt = time.monotonic(), 0
    while True:
        try:
            return write()
        except mlflow.exceptions.MlflowException as err:
            attempt += 1
            if not retry_if(err) or (attempts is not None and attempt >= attempts):
                raise
            waited = time.monotonic() - began
            if attempts is None and waited >= (store_wait() if wait is None else wait):
                failure = store_failure(mlflow.get_tracking_uri(), err, round(waited))
                if failure is None:
                    raise
                raise failure from err
            time.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))


def _alive(pid: str | None) -> bool:
    """Whether a process with this id still exists on this host."""
    if not pid or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def may_be_alive(run: Run) -> bool:
    """Whether the process that holds a RUNNING run may still live: on this host its pid is
    checked; on another host (a cluster node) nothing here can tell, so it counts as alive.
    A run without these tags (older than them) has nobody to wait for."""
    host, pid = run.data.tags.get(tags.HOST), run.data.tags.get(tags.PID)
    if not host or not pid:
        return False
    return host != socket.gethostname() or _alive(pid)


def end_if_dead(client: MlflowClient, run: Run) -> bool:
    """End a RUNNING run KILLED if its process is gone (the one rule every launch follows:
    a live process's run is never ended by another); whether it is ended now."""
    if run.info.status != "RUNNING":
        return True
    if may_be_alive(run):
        return False
    client.set_terminated(run.info.run_id, status="KILLED")
    return True


def still_running(run: Run, uri: str) -> str:
    """Why a live run is left alone, and what the user can do: 'is still training in ...'."""
    host, pid = run.data.tags.get(tags.HOST), run.data.tags.get(tags.PID)
    where = f"process {pid} on {host}"
    if host == socket.gethostname():
        return (
            f"is still training in {where}: wait for it to end, or stop it (Ctrl-C in its "
            f"terminal, or kill -INT {pid})"
        )
    client = f"mlflow.MlflowClient('{uri}')"
    end = f"python -c \"import mlflow; {client}.set_terminated('{run.info.run_id}', 'KILLED')\""
    return (
        f"is RUNNING in {where}, which this machine cannot check: wait for it to end; if "
        f"that process is gone, end the run first with {end}"
    )


def forget_connections() -> None:
    """In a forked child: drop the database connections inherited from the parent (SQLite
    and PostgreSQL connections must not be shared across processes), without closing
    them under the parent; the child opens its own on first use (SQLAlchemy's fork recipe)."""
    for engine in mlflow_internals.cached_engines():
        engine.dispose(close=False)
