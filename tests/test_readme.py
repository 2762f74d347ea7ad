"""README.md, executed: every command in its ```bash blocks runs for real (epochs trimmed),
every ```console transcript is replayed and its output compared, every config file it shows
validates, and its lists of shipped configs name exactly the files in conf/, so the README
cannot rot (issue 11).

A block's commands run in order, as a reader would type them, in a launch folder of the
block's own (its outputs/ holds the MLflow store; `data/MNIST/raw/` there stands for what
torchvision downloads: tiny generated IDX files, since CI has neither MNIST nor a network).
A block's commands (with the blocks that follow it, see FOLLOWS) are a chain, run in order
on one xdist worker the first time one of its tests asks; chains run side by side on the
workers. Each command's test checks its own result, so a failure names the command and
its README line.

How each kind of command runs (`plan`; a command it does not know fails its test):
- `python -m runner ...` as written plus `trainer.epochs=2`; a sweep is first validated job
  by job with `runner.check`, then run cut to its first job (the logged model kept where
  `sweep.register` needs it). `runner.check`/`report` as written; `runner.predict` and
  `runner.evaluate` with `data/...` read from the project's own data folder.
- `make run` from the project folder, its store and Hydra folders sent to the launch folder;
  `.venv`'s install stamp is not remade (`make -o`), so no test reinstalls packages.
- `make test` is not run (the suite would run itself): `.ci/run` must call it, and
  `make -n test` must plan the lint and pytest.
- `python -m runner.ui`: on a free port until the URL it prints answers, then stopped.
  `make ui` is planned (`make -n`) and must call it: one UI server start is enough.
- `cluster/tracking_server.py start|stop` for real (PostgreSQL and an MLflow server), in the
  block's launch folder and on a free port in place of the README's 5001; `stop` purges.
  `cluster/slurm.py start|stop` for real too; `VAR=value command` runs the command with it,
  `export VAR=value` the rest of its block.
- Stand-ins: `/path/to/datasets` is a folder with tiny MNIST files; `<sweep run id>` the
  newest sweep in the store.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.configs import shipped
from tests.conftest import PROJECT, answers, free_port, make_vision_dataset, wait_until

README = PROJECT / "README.md"
CONF = PROJECT / "conf"
# Commands are ```bash, transcripts ```console; ```text is shown only (a folder's layout).
LANGUAGES = {"bash", "console", "yaml", "python", "text"}
# Its commands install the package into a fresh environment: tests/test_install.py runs them.
INSTALL_SECTION = "## Use it in your own project"
TRIM = ["trainer.epochs=2"]  # appended to every `python -m runner`: later overrides win
# Also appended to the README's other runs (not `make run`, the newcomer's whole run): the
# plots and the logged model cost more than the 2 epochs and are tested on the default run
# (`make run` here, tests/test_cli.py) and on each kind of data (tests/test_tables.py ...).
QUIET = ["trainer.plots=false", "trainer.log_model=false"]
TIMEOUT = 300  # seconds, per command
# A block with such a command runs after the block before it, in its launch folder: the UI
# browses the store that `make run` left, a report reads the sweeps run just above it.
FOLLOWS = r"\bui\b|<sweep run id>"
SERVER_PORTS: dict[Path, int] = {}  # a block's tracking server port, by launch folder


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # README line of the block's first content line
    text: str
    section: str = ""  # the `## ` heading it is under


@dataclass(frozen=True)
class Command:
    line: int
    text: str  # as written, continuations joined, comment dropped
    expected: tuple[str, ...] = ()  # a transcript's printed lines

    @property
    def id(self) -> str:
        return f"L{self.line}: {self.text}"


def readme_blocks() -> list[Block]:
    blocks, lang, start, body, section = [], None, 0, [], ""
    for number, line in enumerate(README.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(.*)$", line)
        if lang is None and line.startswith("## "):
            section = line.strip()
        if fence and lang is None:
            lang, start, body = fence.group(1).strip(), number + 1, []
        elif fence:
            blocks.append(Block(lang, start, "\n".join(body), section))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md: the block opened at line {start - 1} is never closed"
    return blocks


def bash_commands(block: Block) -> list[Command]:
    """One command per line (`\\` continuations joined), comments and blank lines skipped."""
    out, pending, first = [], "", 0
    for offset, line in enumerate(block.text.splitlines()):
        if not pending:
            first = block.line + offset
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        words = shlex.split(pending, comments=True)
        if words:
            out.append(Command(first, strip_comment(pending)))
        pending = ""
    return out


def strip_comment(text: str) -> str:
    """The command without its trailing comment (a `#` outside quotes)."""
    quote = None
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1].isspace()):
            return " ".join(text[:i].split())
    return " ".join(text.split())


def console_commands(block: Block) -> list[Command]:
    """A transcript: `$ command` lines, each followed by the lines it prints."""
    out: list[Command] = []
    for offset, line in enumerate(block.text.splitlines()):
        if line.startswith("$ "):
            out.append(Command(block.line + offset, strip_comment(line[2:])))
        elif out:
            last = out[-1]
            out[-1] = Command(last.line, last.text, (*last.expected, line))
        elif line.strip():
            raise AssertionError(f"README.md line {block.line + offset}: output before any `$ `")
    return out


def block_commands(block: Block) -> list[Command]:
    if block.lang in ("bash", "console"):
        return bash_commands(block) if block.lang == "bash" else console_commands(block)
    return []


BLOCKS = readme_blocks()
COMMANDS = [
    c for b in BLOCKS if b.lang == "bash" and b.section != INSTALL_SECTION for c in bash_commands(b)
]
TRANSCRIPTS = [c for b in BLOCKS if b.lang == "console" for c in console_commands(b)]


# Where and how the commands run.


def workspace(root: Path, data: Path) -> Path:
    """A launch folder: `data/` (what torchvision downloads there: tiny IDX files) and the
    README's ```python files that name themselves (`# my_layers.py`)."""
    root.mkdir()
    (root / "data").symlink_to(data, target_is_directory=True)
    for block in BLOCKS:
        named = re.match(r"#\s*(\w+\.py)\b", block.text)
        if block.lang == "python" and named:
            (root / named.group(1)).write_text(block.text + "\n")
    return root


def env() -> dict[str, str]:
    """The caller's environment, less a tracking server and any enclosing make's flags;
    the MLflow companion on whatever the core count, as in tests/conftest.py's run_cli."""
    drop = {"MLFLOW_TRACKING_URI", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "RUNNER_COMPANION": "1"}


def sweep_run_id(ws: Path) -> str:
    """The newest sweep parent run in the workspace's store (a small sweep if none yet)."""
    from mlflow.tracking import MlflowClient

    from runner.tracking.tags import IS_SWEEP

    uri = f"sqlite:///{ws / 'outputs' / 'mlflow.db'}"
    for attempt in range(2):
        if (ws / "outputs" / "mlflow.db").exists():
            client = MlflowClient(uri)
            ids = [e.experiment_id for e in client.search_experiments()]
            runs = client.search_runs(
                ids, f"tags.`{IS_SWEEP}` = 'true'", order_by=["attributes.start_time DESC"]
            )
            if runs:
                return runs[0].info.run_id
        if attempt == 0:  # e.g. `pytest -k report`: the README's sweeps did not run
            proc = run(["-m", "model=xor_linear,xor_deep", *TRIM, *QUIET], ws, module="runner")
            assert proc.returncode == 0, proc.stdout[-3000:]
    raise AssertionError("no sweep run in the workspace's store")


def ensure_store(ws: Path) -> None:
    """A store to browse, as `make run` leaves (e.g. `pytest -k ui`: it did not run)."""
    if not (ws / "outputs" / "mlflow.db").exists():
        proc = run([*TRIM, *QUIET], ws, "runner")
        assert proc.returncode == 0, proc.stdout[-3000:]


def fill(text: str, ws: Path) -> str:
    """The README's stand-ins for what only the reader knows, filled in; any other fails."""
    if "/path/to/datasets" in text:
        text = text.replace("/path/to/datasets", str((ws / "data").resolve()))  # a copy
    if "<sweep run id>" in text:
        text = text.replace("<sweep run id>", sweep_run_id(ws))
    for folder in ("/tmp/team-server", "/tmp/slurm"):  # the server's and cluster's folders
        text = text.replace(folder, str(ws / Path(folder).name))
    if "5001" in text:
        text = text.replace("5001", str(SERVER_PORTS.setdefault(ws, free_port())))
    unknown = re.findall(r"<[^>]*>|/path/\S*", text)
    assert not unknown, f"placeholders {unknown}: teach tests/test_readme.py's fill() them"
    return text


def run(args: list[str], cwd: Path, module: str | None = None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", module, *args] if module else args
    return subprocess.run(
        argv, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=TIMEOUT,
    )  # fmt: skip


# From a README command to what runs.


@dataclass
class Plan:
    argv: list[str]
    cwd: Path
    server: bool = False  # runs until stopped: wait for its URL, fetch it, stop it


EXPORTS: dict[Path, list[str]] = {}  # a block's `export VAR=value`s, by launch folder


def plan(text: str, ws: Path) -> Plan:
    words = shlex.split(fill(text, ws))
    if words[0] == "export":
        assert all(re.fullmatch(r"[A-Z_]+=.*", w) for w in words[1:]), text
        EXPORTS.setdefault(ws, []).extend(words[1:])
        return Plan(["true"], ws)
    todo = plan_words(words, text, ws)
    exported = EXPORTS.get(ws, [])
    return Plan(["env", *exported, *todo.argv], todo.cwd, todo.server) if exported else todo


def plan_words(words: list[str], text: str, ws: Path) -> Plan:
    if re.fullmatch(r"[A-Z_]+=\S+", words[0]):  # an environment variable for the command
        inner = plan_words(words[1:], text, ws)
        return Plan(["env", words[0], *inner.argv], inner.cwd, inner.server)
    if words[0] == ".venv/bin/python":
        python = PROJECT / ".venv" / "bin" / "python"
        assert python.exists(), f"{python} missing: the README's interpreter"
        words[0] = str(python)
        if words[1] in ("cluster/tracking_server.py", "cluster/slurm.py"):  # for real
            purge = ["--purge"] if words[2] == "stop" and "tracking" in words[1] else []
            return Plan([words[0], str(PROJECT / words[1]), *words[2:], *purge], ws)
        assert words[1] == "-m", f"README command without -m: {text}"
        module = words[2]
        if module == "runner":
            quiet = QUIET
            if any(w.startswith("sweep.register=") for w in words):  # it needs the model
                quiet = [q for q in QUIET if not q.startswith("trainer.log_model")]
            return Plan([*words, *first_job(words[3:], ws), *TRIM, *quiet], ws)
        if module in ("runner.check", "runner.report"):
            return Plan(words, ws)
        if module in ("runner.predict", "runner.evaluate"):  # the project's data files
            return Plan([project_data(w) for w in words], ws)
        if module == "runner.ui":
            ensure_store(ws)
            return Plan([*words, "--port", str(free_port())], ws, server=True)
        raise AssertionError(f"README runs a module tests/test_readme.py does not know: {text}")
    if words[0] == "make":
        return plan_make(words[1:], ws)
    raise AssertionError(f"README command unknown to tests/test_readme.py: {text}")


def plan_make(args: list[str], ws: Path) -> Plan:
    variables = dict(a.split("=", 1) for a in args if "=" in a)
    (target,) = [a for a in args if "=" not in a]
    # .venv is built (CI's `make test` built it): setup's stamp is not remade here, so a
    # test never reinstalls packages.
    make = ["make", "-C", str(PROJECT), "-o", ".venv/.installed"]
    if target == "run":  # the launch folder is the project: send every output to ws
        out = ws / "outputs"
        variables["ARGS"] = " ".join(
            [variables.get("ARGS", ""), *TRIM, f"tracking.store_dir={out}",
             f"hydra.run.dir={out}/runs/make-run", f"hydra.sweep.dir={out}/multirun/make-run"]
        ).strip()  # fmt: skip
        return Plan([*make, target, *(f"{k}={v}" for k, v in variables.items())], ws)
    if target == "ui":  # the UI itself starts for real from `python -m runner.ui` beside it
        assert (PROJECT / "runner" / "ui.py").exists(), (
            "README documents `make ui`, which calls `python -m runner.ui`: runner/ui.py is missing"
        )
        return Plan([*make, "-n", target], ws)
    raise AssertionError(f"README runs `make {target}`, unknown to tests/test_readme.py")


def project_data(word: str) -> str:
    """A README word naming a shipped data file (`data/...`, `key=data/...`), as the path in
    the project (the launch folder's data/ holds tiny MNIST files only)."""
    key, sep, value = word.rpartition("=")
    return f"{key}{sep}{PROJECT / value}" if value.startswith("data/") else word


def first_job(args: list[str], ws: Path) -> list[str]:
    """For a sweep: `runner.check` validates every job of the same command line, then the
    overrides of its first job, appended, cut the real sweep to that one job (Hydra's basic
    sweeper lets a later override of a key win, and the command line beats
    `hydra.sweeper.params`). For a single run: nothing."""
    choices = [a.split("=", 1) for a in args if re.fullmatch(r"\w+=\w+", a)]
    multirun = (
        "-m" in args
        or "--multirun" in args
        or any(
            "MULTIRUN" in (CONF / group / f"{name}.yaml").read_text()
            for group, name in choices
            if (CONF / group / f"{name}.yaml").is_file()
        )
    )
    if not multirun:
        return []
    proc = run(args, ws, module="runner.check")
    assert proc.returncode == 0, proc.stdout[-4000:]
    jobs = [line[5:] for line in proc.stdout.splitlines() if line.startswith("ok   ")]
    if len(jobs) < 2:  # one job (or an Optuna search, whose trials check cannot know)
        return []
    return [o for o in shlex.split(jobs[0]) if o not in args]  # a `+key` twice fails


def serve(argv: list[str], cwd: Path, timeout: float = 120) -> str:
    """Start a server, wait for the URL it prints, fetch that page, stop it (and its
    children); returns what it printed."""
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)])
    reader.daemon = True
    reader.start()
    printed, url, deadline = [], None, time.monotonic() + timeout
    try:
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            printed.append(line)
            found = re.search(r"https?://[\w.\-]+:\d+", line)
            url = found and found.group(0)
        assert url, f"no URL printed within {timeout} s:\n{''.join(printed)[-3000:]}"
        # The URL may be printed just before the socket listens.
        wait_until(
            lambda: answers(url, timeout=10),
            lambda: f"{url} answering:\n{''.join(printed)[-3000:]}", timeout=30, every=1,
        )  # fmt: skip
    finally:
        with contextlib.suppress(ProcessLookupError):  # make, and the UI: it stops its server
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return "".join(printed)


@dataclass
class Outcome:
    argv: list[str] | None = None
    returncode: int = 0
    output: str = ""
    error: Exception | None = None  # planning or running it failed (an assertion, a timeout)
    cwd: Path | None = None  # the launch folder it ran in


def execute(command: Command, ws: Path) -> Outcome:
    try:
        if command.text == "make test":  # running the suite from inside itself would recurse
            check_make_test()
            return Outcome()
        todo = plan(command.text, ws)
        if todo.server:
            return Outcome(todo.argv, 0, serve(todo.argv, todo.cwd), cwd=ws)
        proc = run(todo.argv, todo.cwd)
        return Outcome(todo.argv, proc.returncode, proc.stdout, cwd=ws)
    except Exception as err:  # reported by the command's own test
        return Outcome(error=err)


def chains() -> dict[int, list[Command]]:
    """The README's commands as chains, by their first block's line, that run in order in
    one launch folder: a block, and the blocks after it that browse what it made (FOLLOWS)."""
    out: dict[int, list[Command]] = {}
    for block in BLOCKS:
        commands = block_commands(block)
        if out and any(re.search(FOLLOWS, c.text) for c in commands):
            out[next(reversed(out))].extend(commands)
        elif commands:
            out[block.line] = commands
    return out


CHAINS = chains()
CHAIN_OF = {c: line for line, commands in CHAINS.items() for c in commands}


def lane(command: Command) -> str:
    """The xdist group a command's test runs in: its chain's, so a chain runs on one worker
    and chains run side by side; the Slurm chain shares the machine's cluster tools with
    tests/test_slurm.py, so both run on one worker."""
    if any("cluster/slurm.py" in c.text for c in CHAINS[CHAIN_OF[command]]):
        return "slurm"
    return f"readme-L{CHAIN_OF[command]}"


def params(commands: list[Command]) -> list:
    return [pytest.param(c, id=c.id, marks=pytest.mark.xdist_group(lane(c))) for c in commands]


@pytest.fixture(scope="session")
def readme_data(tmp_path_factory) -> Path:
    """What torchvision downloads into a launch folder's data/: tiny MNIST files, made once."""
    data = tmp_path_factory.mktemp("readme-data")
    # 5,100 training images: the shipped configs hold 5,000 out for validation.
    make_vision_dataset(data, "MNIST", n_train=5100, n_test=40)
    return data


RAN: dict[int, dict[Command, Outcome]] = {}  # each chain's outcomes, once it has run here


@pytest.fixture
def outcome_of(request, tmp_path_factory, readme_data):
    """A command's outcome: its chain's selected commands run in order (with the block's
    `export`s) the first time one of them is asked for."""

    def outcome(command: Command) -> Outcome:
        line = CHAIN_OF[command]
        if line not in RAN:
            chosen = {
                i.callspec.params.get("command")
                for i in request.session.items
                if hasattr(i, "callspec")
            }
            todo = [c for c in CHAINS[line] if c in chosen or c.text.startswith("export ")]
            ws = workspace(tmp_path_factory.getbasetemp() / f"readme-L{line}", readme_data)
            RAN[line] = {c: execute(c, ws) for c in todo}
        done = RAN[line][command]
        if done.error is not None:
            raise done.error
        return done

    return outcome


# The tests.


def test_blocks_are_tagged():
    untagged = [b.line - 1 for b in BLOCKS if b.lang not in LANGUAGES]
    assert not untagged, f"README blocks at lines {untagged}: tag them one of {LANGUAGES}"
    assert COMMANDS and TRANSCRIPTS


@pytest.mark.parametrize("command", params(COMMANDS))
def test_readme_command(command, outcome_of):
    outcome = outcome_of(command)
    shown = f"{shlex.join(outcome.argv or [])}\n{outcome.output[-4000:]}"
    assert outcome.returncode == 0, shown
    assert "Traceback" not in outcome.output, shown
    broken = broken_promises(command, outcome.output, outcome.cwd)
    assert not broken, f"{'; '.join(broken)}\n{shown}"


def broken_promises(command: Command, output: str, ws: Path | None) -> list[str]:
    """What the README says a command does, beyond exiting 0, that its output or files
    do not show: a run or sweep ends FINISHED (and no run in the store is left RUNNING),
    `runner.check` finds every job valid, a report prints its table and writes its files,
    a server prints its URL, a cluster its slurm.conf."""
    text, broken = command.text, []
    if re.search(r"-m runner( |$)", text) or text.startswith("make run"):
        sweep = re.search(r"sweep run \w+ ended FINISHED", output)
        single = re.search(r"MLflow run \w+ ended FINISHED", output) and "final: " in output
        if not (sweep or single):
            broken.append("no sweep, or run with its `final:` line, ended FINISHED")
    elif "-m runner.check" in text:
        if not re.search(r"^\d+ jobs? checked, 0 failed$", output.strip().splitlines()[-1]):
            broken.append("runner.check did not find every job valid")
    elif "-m runner.report" in text:
        written = [p.name for p in (ws / "outputs" / "reports").glob("*/*")] if ws else []
        if "final val" not in output or not {"comparison.csv", "comparison.md"} <= set(written):
            broken.append(f"no report table printed or files written (wrote {written})")
    elif text.startswith("make ui") and "-m runner.ui" not in output:
        broken.append("`make ui` does not call `python -m runner.ui`")
    elif "tracking_server.py start" in text and not re.search(r"https?://", output):
        broken.append("the tracking server printed no URL")
    elif "slurm.py start" in text and not Path(output.strip().splitlines()[-1]).is_file():
        broken.append("the cluster printed no slurm.conf path")
    store = ws / "outputs" / "mlflow.db" if ws else None
    if store is not None and store.exists():
        with contextlib.closing(sqlite3.connect(store)) as db:
            running = db.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()
        if running[0]:
            broken.append(f"{running[0]} run(s) left RUNNING in {store}")
    return broken


@pytest.mark.parametrize("command", params(TRANSCRIPTS))
def test_readme_transcript(command, outcome_of):
    """The lines a transcript shows are printed, in order; `...` ends a line's shown part."""
    printed = outcome_of(command).output.splitlines()
    at = 0
    for want in command.expected:
        while at < len(printed) and not shows(want, printed[at].rstrip()):
            at += 1
        assert at < len(printed), f"not printed (in this order): {want!r}\n" + "\n".join(printed)
        at += 1


def shows(want: str, line: str) -> bool:
    return line.startswith(want[:-3]) if want.endswith("...") else line == want


def check_make_test() -> None:
    """`make test` as CI runs it: `.ci/run` calls it, and make can plan it."""
    ci = [line.strip() for line in (PROJECT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci, ".ci/run no longer runs the README's `make test`"
    proc = subprocess.run(
        ["make", "-n", "-C", str(PROJECT), "test"], env=env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "-m pytest" in proc.stdout and "ruff check" in proc.stdout, proc.stdout


def test_newcomer_commands_come_first():
    """The quick start's two commands: `make run` and `make test`, the latter what CI runs."""
    first = next(b for b in BLOCKS if b.lang == "bash")
    assert [c.text for c in bash_commands(first)] == ["make run", "make test"]
    makefile = (PROJECT / "Makefile").read_text()
    assert re.search(r"^run:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    check_make_test()


def config_lists() -> dict[str, set[str]]:
    """The README's list of shipped configs: lines `- `group/`: name, name, ...`."""
    lists = {}
    for group, names in re.findall(r"^- `([\w/]+)/`[^:\n]*: ([^\n]*)$", README.read_text(), re.M):
        lists[group] = {n.strip(" `.") for n in names.split(",")}
    return lists


def test_readme_lists_every_shipped_config():
    shipped_files: dict[str, set[str]] = {}
    for path in CONF.rglob("*.yaml"):
        if path.parent != CONF:
            group = path.parent.relative_to(CONF).as_posix()
            shipped_files.setdefault(group, set()).add(path.stem)
    assert config_lists() == shipped_files


def config_blocks() -> list[tuple[str, str, Block]]:
    """```yaml blocks that name their file: `# conf/<group>/<name>.yaml`."""
    out = []
    for block in BLOCKS:
        named = re.match(r"#\s*conf/(\w+)/(\w+)\.yaml", block.text)
        if block.lang == "yaml" and named:
            out.append((named.group(1), named.group(2), block))
    return out


@pytest.mark.parametrize(
    "group,name,block",
    config_blocks(),
    ids=[f"L{b.line}: conf/{g}/{n}.yaml" for g, n, b in config_blocks()],
)
def test_readme_config_files_validate(group, name, block):
    """A config the README shows validates in the default setup; a shipped one's keys have
    the shipped values (the README may add keys at their defaults)."""
    from runner.config.spec import validate

    node = OmegaConf.create(block.text)
    cfg = OmegaConf.create(shipped("mlp"))
    cfg[group] = node
    validate(OmegaConf.to_container(cfg, resolve=True))
    path = CONF / group / f"{name}.yaml"
    if path.exists():
        real = OmegaConf.to_container(OmegaConf.load(path))
        assert {k: OmegaConf.to_container(node)[k] for k in real} == real
