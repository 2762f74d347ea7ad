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


class RawRowsModel(mlflow.pyfunc.PythonModel):
    """Wraps a `runner.components.datasets.tabular.TabularPredictor` (encoder + network)."""

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> np.ndarray:
        """Predictions for raw rows (a DataFrame with the table's feature columns)."""
        return self.predictor.predict(model_input)
