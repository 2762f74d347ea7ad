"""Predict with a trained model on new rows or images, without writing code.

    python -m runner.predict SOURCE --input rows.csv --output predictions.csv [--proba]
    python -m runner.predict SOURCE --input images-idx3-ubyte|png_folder --output labels.csv

SOURCE is a run id, a sweep's parent run id (its best job), an experiment name (its best
FINISHED run by its primary metric) or `models:/<name>@<alias>` (`models:/<name>/<version>`).
The input is a raw table in the user's own columns (CSV, TSV or Parquet), read with the
run's own `data.read` options; a target column is ignored, missing values are imputed as in
training, and a column the model reads but the table lacks is named in one line. The output
is the input's rows with a `prediction` column (the class for a classification; with
`--proba`, one `proba_<class>` column per class). Rows are read, encoded and written a chunk
at a time (`--chunk-rows`), so a table of any length fits in memory. The numbers are the
logged MLflow model's (`mlflow.pyfunc.load_model(...).predict`).

An image model (MNIST, Fashion-MNIST) reads an IDX file of 28x28 images (MNIST's format,
.gz too) or a folder of 28x28 PNGs (grey, white on black as MNIST draws), scales the pixels
as the run did, and writes one row per image: its `index` (IDX) or `file` (PNG), and its
`prediction` (the class name), with `--proba` one `proba_<class>` column per class.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runner.errors import ConfigError, StoreError
from runner.tracking import ServerUnreachable, check_server, command_store

CHUNK_ROWS = 100_000


def load_model(model_uri: str) -> Any:
    """The logged MLflow model (pyfunc)."""
    import mlflow.pyfunc

    from runner.sweep.source import SourceError, first_line
    from runner.tracking import mlflow_internals

    try:
        with mlflow_internals.pinned_requirements():
            return mlflow.pyfunc.load_model(model_uri)
    except Exception as err:
        raise SourceError(f"{model_uri} has no model to load: {first_line(err)}") from None


def logged_a_model(client: Any, run_id: str) -> bool:
    """Whether the run was told to log its model (its trainer.log_model param)."""
    return client.get_run(run_id).data.params.get("trainer.log_model", "").lower() != "false"


def predict_images(
    model: Any, config: dict[str, Any], source: Path, output: Path, proba: bool
) -> int:
    """Write `output`: one row per image (its file, or its index in an IDX file) with the
    predicted class, scaled as the run scaled its pixels; returns the image count."""
    import numpy as np
    import pandas as pd
    import torch

    from runner.components.datasets import vision
    from runner.components.plugins import load_components
    from runner.registry import LOSSES
    from runner.sweep.source import SourceError
    from runner.training.metrics import TaskMetrics

    data, loss = config.get("data") or {}, (config.get("model") or {}).get("loss") or {}
    kind = data.get("type") or data.get("name")  # (a config named as its loader has no type)
    if kind not in vision.SETS:
        raise SourceError(
            f"the model of data {data.get('name', kind)!r} takes neither raw table rows nor "
            "images: load it with mlflow.pytorch.load_model"
        )
    images, files = vision.read_images(source)
    mean, std = vision.pixel_scaling(kind, data.get("scaling", "standardize"))
    x = vision.normalize(torch.from_numpy(images.copy()), mean, std).numpy()
    output_kind = "logits"
    load_components([])
    loss_name = loss.get("name") or loss.get("type")
    if loss_name in LOSSES:
        output_kind = LOSSES.get(loss_name, "model.loss.name").meta.get("output", output_kind)
    outputs = torch.as_tensor(np.asarray(model.predict(x)))  # the logged model's numbers
    metrics = TaskMetrics("multiclass", output_kind)
    classes = np.asarray(vision.class_names(kind), dtype=object)
    frame = pd.DataFrame({"file": files} if files else {"index": np.arange(len(images))})
    frame["prediction"] = classes[metrics.predict(outputs).numpy()]
    if proba:
        probabilities = metrics.probabilities(outputs).numpy()
        for i, name in enumerate(classes):
            frame[f"proba_{name}"] = probabilities[:, i]
    partial = output.with_name(output.name + ".partial")
    try:
        write_rows(frame, partial, header=True)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return len(frame)


def read_options(client: Any, run_id: str) -> dict[str, Any]:
    """The run's own `data.read` options (how its table was read), from its config.yaml."""
    from runner.sweep.source import run_config

    try:
        config = run_config(client, run_id)
    except ConfigError:
        return {}  # (a run from before config.yaml was logged): pandas' defaults
    return dict((config.get("data") or {}).get("read") or {})


def chunks(path: Path, read: dict[str, Any], rows: int) -> Iterator[Any]:
    """The input table a chunk of rows at a time, read as training read its table; a file
    pandas cannot read as one (another encoding, not a table, empty) is a ConfigError."""
    if not path.is_file():
        raise ConfigError(f"--input: {str(path)!r} is not a file")
    try:
        yield from _chunks(path, read, rows)
    except (ValueError, OSError) as err:  # (UnicodeDecodeError and pandas' errors among them)
        from runner.sweep.source import first_line

        raise ConfigError(
            f"--input: {str(path)!r} cannot be read as a table with the run's data.read "
            f"options {read or {}}: {first_line(err)}"
        ) from None


def _chunks(path: Path, read: dict[str, Any], rows: int) -> Iterator[Any]:
    from runner.components.datasets.table_file import infinities_as_gaps, reader

    function, options = reader(path, read)
    if function.__name__ == "read_parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
            frame = batch.to_pandas()
            infinities_as_gaps(frame)
            yield frame
        return
    with function(path, chunksize=rows, **options) as table:
        for frame in table:
            infinities_as_gaps(frame)
            yield frame


def predict_file(
    predictor: Any, source: Path, output: Path, read: dict[str, Any], proba: bool, rows: int
) -> int:
    """Write `output`: the input's rows with their predictions; returns the row count."""
    import numpy as np

    if proba and predictor.class_names is None:
        raise ConfigError("--proba: the model predicts numbers (a regression), not classes")
    wanted = [column.name for column in predictor.encoder.columns]
    partial = output.with_name(output.name + ".partial")
    written = 0
    # A chunk is written by a thread of its own while the next is read and encoded (pyarrow's
    # writer and pandas' parser let go of the GIL): at most one write in flight, so memory
    # stays two chunks' worth.
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict-writer") as writer:
            pending: Future | None = None
            for frame in chunks(source, read, rows):
                missing = [name for name in wanted if name not in frame.columns]
                if missing:
                    raise ConfigError(
                        f"--input: {str(source)!r} lacks the column(s) {', '.join(missing)} "
                        f"the model reads (it reads {', '.join(wanted)})"
                    )
                try:
                    labels, probabilities = predictor.predict_with_probabilities(frame, proba)
                except (ConfigError, ValueError) as err:
                    where = f"rows {written + 1}-{written + len(frame)}"
                    raise ConfigError(f"--input: {where}: {err}") from None
                frame = frame.assign(prediction=labels)
                if probabilities is not None:
                    for i, name in enumerate(predictor.classes()):
                        frame[f"proba_{name}"] = np.asarray(probabilities)[:, i]
                if pending is not None:
                    pending.result()
                pending = writer.submit(write_rows, frame, partial, not written)
                written += len(frame)
            if pending is not None:
                pending.result()
        if not written:
            raise ConfigError(f"--input: {str(source)!r} has no rows")
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    return written


def write_rows(frame: Any, path: Path, header: bool) -> None:
    """Append a chunk's rows to the CSV (its header first): pyarrow's writer, ten times
    pandas' speed; pandas' for a column pyarrow cannot type (mixed numbers and text)."""
    import pyarrow as pa
    from pyarrow import csv as pa_csv

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        frame.to_csv(path, mode="w" if header else "a", header=header, index=False)
        return
    with open(path, "wb" if header else "ab") as out:
        pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=header))


def main(argv: list[str] | None = None) -> int:
    """Command line: resolve SOURCE, predict the input's rows, write the output."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.predict", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("source", help="run id, sweep run id, experiment name, or models:/ URI")
    parser.add_argument("--input", required=True, type=Path, help="raw rows: CSV, TSV or Parquet")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write")
    parser.add_argument("--proba", action="store_true", help="one probability column per class")
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS, help="rows per chunk")
    parser.add_argument(
        "--tracking-uri", default=None,
        help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.chunk_rows < 1:
        parser.error(f"--chunk-rows: {args.chunk_rows} is not a positive number of rows")
    if not args.output.resolve().parent.is_dir():
        folder = str(args.output.parent)
        print(f"error: --output: folder {folder!r} does not exist", file=sys.stderr)
        return 1
    uri, missing = command_store(args.tracking_uri)
    if missing:
        print(missing, file=sys.stderr)
        return 1
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # (one per load)
    import mlflow
    from mlflow.tracking import MlflowClient

    from runner.sweep.source import SourceError, resolve_source, run_config
    from runner.tracking.pyfunc_model import table_predictor

    mlflow.set_tracking_uri(uri)  # (models:/ and runs:/ URIs are read through it)
    client = MlflowClient(uri)
    try:
        check_server(uri)
        model_uri, run_id = resolve_source(client, args.source)
        try:
            model = load_model(model_uri)
        except SourceError:
            if model_uri.startswith("runs:/") and not logged_a_model(client, run_id):
                raise SourceError(
                    f"run {run_id} logged no model: it ran with trainer.log_model=false. "
                    "Predict with a run that logged its model; runner.evaluate reads this "
                    "one's checkpoint"
                ) from None
            raise
        predictor = table_predictor(model)
        if predictor is not None:
            read = read_options(client, run_id)
            count = predict_file(
                predictor, args.input, args.output, read, args.proba, args.chunk_rows
            )
        else:
            config = run_config(client, run_id)
            count = predict_images(model, config, args.input, args.output, args.proba)
    except SourceError as err:
        print(f"error: {err} (store {uri})", file=sys.stderr)
        return 1
    except (ConfigError, ServerUnreachable, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    what = ("row" if predictor is not None else "image") + ("" if count == 1 else "s")
    print(f"{count} {what} predicted by {model_uri} (run {run_id}): {args.output}")
    return 0


def entry() -> int:
    """`main`, with a terminal's Ctrl-C ending it in one line: exit 130, and no output
    file, not even a partial one."""
    from runner.training.signals import one_line_on_ctrl_c

    return one_line_on_ctrl_c(main, "interrupted: no predictions written")


if __name__ == "__main__":
    sys.exit(entry())
