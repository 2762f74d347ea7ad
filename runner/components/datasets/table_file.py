"""Reading a table file: the format from its extension (`.csv`, `.tsv`, `.parquet`; any other
is read as comma-separated text), `data.read` options passed to pandas and checked against
its reader's signature, and the mistakes a raw file hides refused in one line (an empty
file, a header without rows, the wrong separator, duplicate column names). Infinite numbers
become gaps, with a warning naming the column."""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from runner.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("runner")
COMPRESSED = (".gz", ".bz2", ".xz", ".zip", ".zst")  # read_csv decompresses these itself
SEPARATORS = (";", "\t", "|")  # what a one-column header holding one of them was split on
# Options the loader sets itself or that would not return one DataFrame.
RESERVED = {
    "filepath_or_buffer": "the file is data.path",
    "path": "the file is data.path",
    "iterator": "the whole table is read at once",
    "chunksize": "the whole table is read at once",
}
# What reading the raw header row again keeps of `data.read`: how the text is split.
READ_HERE = ("nrows",)  # what the runner adds to read a header alone
HEADER_OPTIONS = (
    "sep", "delimiter", "encoding", "encoding_errors", "skiprows", "quotechar", "comment",
    "skipinitialspace", "compression", "lineterminator", "escapechar", "dialect", "engine",
)  # fmt: skip
MANGLED = re.compile(r"(.+)\.(\d+)")  # read_csv's name for a repeated column: a, a.1, a.2


def table_file(path: str) -> Path:
    """`data.path` as a file, or a ConfigError saying where it looked."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"data.path: {path!r} is not a file (looked at {file.resolve()})")
    return file


def table_format(file: Path) -> str:
    """`parquet`, `tsv` or `csv` (any other extension: comma-separated text), by extension."""
    suffixes = [s.lower() for s in file.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    return {".parquet": "parquet", ".tsv": "tsv"}.get(last, "csv")


def reader(file: Path, read: dict | None) -> tuple[Callable[..., pd.DataFrame], dict[str, Any]]:
    """The pandas reader for the file's format and its options (`data.read`), each option
    checked against the reader's own signature."""
    import pandas as pd

    if not isinstance(read, (dict, type(None))):
        raise ConfigError(f"data.read: {read!r} is not a mapping of pandas reading options")
    fmt = table_format(file)
    function = pd.read_parquet if fmt == "parquet" else pd.read_csv
    options = dict(read or {})
    allowed = [
        name
        for name, p in inspect.signature(function).parameters.items()
        if p.kind is not inspect.Parameter.VAR_KEYWORD and name not in RESERVED
    ]
    for name in options:
        if name in RESERVED:
            raise ConfigError(f"data.read.{name}: not allowed here ({RESERVED[name]})")
        if name not in allowed:
            raise ConfigError(
                f"data.read.{name}: pandas.{function.__name__} (the reader of a .{fmt} file) "
                f"has no option {name!r}.{did_you_mean(name, allowed)} "
                f"Allowed: {', '.join(allowed)}."
            )
    if fmt == "tsv":
        options.setdefault("sep", "\t")
    return function, options


def read_table(path: str, read: dict | None = None) -> pd.DataFrame:
    """The whole table, checked: rows under a usable header, no repeated column names,
    infinities turned into gaps."""
    file = table_file(path)
    function, options = reader(file, read)
    frame = _read(function, file, path, options)
    check_header(frame.columns, file, path, function, options)
    if not len(frame):
        shown = ", ".join(map(str, frame.columns))
        raise ConfigError(f"data.path: {path!r} has a header ({shown}) but no rows")
    infinities_as_gaps(frame)
    return frame


def read_header(path: str, read: dict | None = None) -> list[str]:
    """The column names alone, read cheaply (no rows), with the header's checks: what
    `python -m runner.check` compares a data config with."""
    file = table_file(path)
    function, options = reader(file, read)
    if function.__name__ == "read_parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(file).names
        except (OSError, ValueError) as err:  # ArrowInvalid is a ValueError
            message = f"data.path: {path!r} is not a readable Parquet file: {err}"
            raise ConfigError(message) from None
        wanted = options.get("columns") or names
        return [n for n in names if n in wanted]
    # nrows goes with neither skipfooter nor the pyarrow engine: the header is read by the
    # default one (the same names).
    header_only = {k: v for k, v in options.items() if k not in ("skipfooter", "engine")}
    columns = _read(function, file, path, {**header_only, "nrows": 0}).columns
    check_header(columns, file, path, function, options)
    return [str(c) for c in columns]


def _read(
    function: Callable[..., pd.DataFrame], file: Path, path: str, options: dict[str, Any]
) -> pd.DataFrame:
    """Call the reader; whatever pandas cannot read becomes one line naming the fix."""
    import pandas as pd

    try:
        return function(file, **options)
    except pd.errors.EmptyDataError:
        raise ConfigError(f"data.path: {path!r} is empty (no header, no rows)") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"data.read.encoding: {path!r} is not {err.encoding} text ({err.reason} at byte "
            f"{err.start}); set data.read.encoding, e.g. latin-1 or cp1252"
        ) from None
    except LookupError as err:  # an encoding Python does not know
        raise ConfigError(
            f"data.read.encoding: {options.get('encoding')!r} is not an encoding Python knows "
            f"({err}); e.g. utf-8, latin-1, cp1252"
        ) from None
    except (ValueError, TypeError, OSError, pd.errors.ParserError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        given = {k: v for k, v in options.items() if k not in READ_HERE}  # the user's own
        shown = f" with data.read {given}" if given else ""
        raise ConfigError(
            f"data.read: pandas.{function.__name__} could not read {path!r}{shown}: {message}"
        ) from None


def check_header(
    columns: pd.Index,
    file: Path,
    path: str,
    function: Callable[..., pd.DataFrame],
    options: dict[str, Any],
) -> None:
    """Refuse a header split on the wrong separator, or one that repeats a name."""
    if function.__name__ != "read_csv":  # Parquet stores its names apart from the values
        return
    if len(columns) == 1 and "sep" not in options and "delimiter" not in options:
        only = str(columns[0])
        for sep in SEPARATORS:
            if sep in only:
                shown = repr(sep).replace("\\\\", "\\")
                decimal = " (and decimal: ',' if numbers are written 18,5)" if sep == ";" else ""
                raise ConfigError(
                    f"data.read.sep: the header of {path!r} is one column, {only[:60]!r}, "
                    f"holding {shown}: set `read: {{sep: {shown}}}` in the data config{decimal}"
                )
    repeated = _repeated_names(columns, file, function, options)
    if repeated:
        raise ConfigError(
            f"data.path: {path!r} repeats the column name(s) {', '.join(map(repr, repeated))}; "
            "rename them in the file's header, or name every column with data.read: "
            "{names: [...], header: 0} (the header row is then skipped)"
        )


def _repeated_names(
    columns: pd.Index, file: Path, function: Callable[..., pd.DataFrame], options: dict[str, Any]
) -> list[str]:
    """Names the header holds more than once. read_csv renames a repeat `a` to `a.1`; only
    then is the raw header row read again (a real column may be called `a.1`)."""
    names = set(map(str, columns))
    suspects = {m.group(1) for c in names if (m := MANGLED.fullmatch(c)) and m.group(1) in names}
    header = options.get("header", "infer")
    if not suspects or "names" in options or not isinstance(header, (int, str)):
        return []
    row = 0 if header == "infer" else int(header)
    raw_options = {k: v for k, v in options.items() if k in HEADER_OPTIONS and k != "engine"}
    raw = _read(function, file, str(file), {**raw_options, "header": None, "nrows": row + 1,
                                            "dtype": str})  # fmt: skip
    values = [str(v) for v in raw.iloc[row].tolist()]
    return sorted({v for v in values if values.count(v) > 1})


def infinities_as_gaps(frame: pd.DataFrame) -> None:
    """Turn inf and -inf into NaN, in place, with one warning per column: an infinite cell
    would make a split's every metric nan, or the training loss nan."""
    for name in frame.columns:
        column = frame[name]
        if column.dtype.kind != "f":
            continue
        infinite = np.isinf(column.to_numpy())
        if infinite.any():
            log.warning(
                "data: column %r holds inf or -inf in %d row(s); they are treated as missing "
                "values (gaps)", str(name), int(infinite.sum()),
            )  # fmt: skip
            frame[name] = np.where(infinite, np.nan, column.to_numpy())
