"""The aicrush drift monitor: payload-log ingest, windows, Evidently drift vs the training reference.

``app`` is the HTTP service (CloudEvents in, ``/metrics`` and ``/reports`` out); ``drift`` the
Evidently analysis of one window; ``reference`` and ``state`` load and persist the reference
sample and the open window; ``retrain`` starts the retraining pipeline on sustained drift;
``cli`` holds the ``aicrush drift`` and ``aicrush monitor`` commands.
"""
