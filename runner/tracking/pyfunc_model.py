"""A table's model as MLflow sees it: raw rows in, predictions out.

`mlflow.pyfunc.load_model(uri).predict(raw_dataframe)` applies the training rows' column
transforms (the run's encoder) and the network, and returns values in the target's units
(class names for classification).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import AnyType, ColSpec, Schema

from runner.errors import ConfigError


class RawRowsModel(mlflow.pyfunc.PythonModel):
    """Wraps a `runner.components.datasets.tabular.TabularPredictor` (encoder + network)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        """Predictions for raw rows (a DataFrame with the table's feature columns)."""
        try:
            return self.predictor.predict(model_input)
        except (ConfigError, ValueError) as err:
            # An MlflowException of this code is a 400 with this text from `mlflow models
            # serve`, where any other error is a 400 that says only "unexpected error".
            raise MlflowException(rows_refused(err), error_code=INVALID_PARAMETER_VALUE) from err


def table_predictor(model: Any) -> Any:
    """The TabularPredictor inside a loaded pyfunc model if it is a table's (RawRowsModel),
    else None."""
    try:
        python_model = model.unwrap_python_model()
    except Exception:  # another flavour (torch's): no python model to unwrap
        return None
    return getattr(python_model, "predictor", None)


def rows_refused(err: Exception) -> str:
    """What a user reads when rows do not fit the model: the encoder's own message, without
    the advice on training configs that it gives while a run reads its table."""
    text = str(err).removeprefix("data.columns.").split("; if it marks a missing value")[0]
    return f"the rows do not fit the model: {text}"


def raw_rows_signature(predictor: Any, example: pd.DataFrame) -> ModelSignature:
    """The model's signature: each column the encoder reads, required, of any type, and
    the predictions' type.

    MLflow would infer `long` for an integer column, and then refuse a row with a gap
    there ("Can not safely convert float64 to int64"), and `double` refuses integers: the
    encoder imputes gaps and reads numbers of either kind, and refuses text in a numeric
    column itself (`RawRowsModel.predict`). Columns the encoder drops are not asked for.
    """
    read = [column.name for column in predictor.encoder.columns]
    inputs = Schema([ColSpec(AnyType(), name, required=True) for name in read])
    outputs = infer_signature(model_output=predictor.predict(example[read])).outputs
    return ModelSignature(inputs=inputs, outputs=outputs)
