"""The aicrush kernel: what every layer shares, and nothing else.

- ``aicrush.config``: the strict pydantic config models, presets and their loading
  (``aicrush.rollout_config`` holds the ``rollout:`` section).
- ``aicrush.state``: the state folder and the MLflow tracking URI, resolved one way for every command.
- ``aicrush.model_folder`` and ``aicrush.text_window``: the model's input contract (label order,
  the text window, loading a model folder and its ``aicrush.json`` metadata).
- ``aicrush.registry``: MLflow registry access (aliases, versions, downloads).
- ``aicrush.images``, ``aicrush.errors``: image names and the data-error type.
- ``aicrush.gcs``: the one Google Cloud Storage client factory (emulator, credentials).

Layers above it, top to bottom: ``pipelines`` -> ``components`` -> ``serving`` -> ``features`` ->
``aicrush``; imports only point down (the import-linter contract in pyproject.toml).
"""
