"""The MLflow pyfunc flavour of an aicrush model, logged as "models from code".

MLflow copies this file next to the model and runs it at load time, so no pickled Python object
is stored in the registry. The model folder itself is the pyfunc artifact ``model``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from aicrush.model_folder import TextClassifier


class AicrushTextClassifier(PythonModel):
    """Input: a frame with a ``text`` column. Output: ``label`` and ``score`` per row."""

    def load_context(self, context: Any) -> None:
        self.classifier = TextClassifier.from_dir(context.artifacts["model"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict | None = None
    ) -> pd.DataFrame:
        texts = [str(t) for t in model_input["text"].tolist()]
        preds = self.classifier.predict(texts)
        return pd.DataFrame({"label": [p.label for p in preds], "score": [p.score for p in preds]})


mlflow.models.set_model(AicrushTextClassifier())
