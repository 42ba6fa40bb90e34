"""KFP components, one module per step: plain functions that do the work and a thin typed
``@dsl.component`` over them.

``kfp.local.SubprocessRunner`` runs only lightweight Python components, so each component body
imports the installed ``aicrush`` logic (baked into the component image, never pip-installed
when a task starts) and makes one call. Component modules must not use
``from __future__ import annotations``: kfp reads the real annotations of the signature.
"""

from collections.abc import Callable
from functools import partial
from typing import Any

from kfp import dsl

from aicrush.images import default_images

#: Image of the CPU components (ingest, validate, features, evaluate, register, rollout).
PIPELINE_IMAGE = default_images()["pipeline"]
#: Image of the training component (CUDA build of torch; runs on L4 nodes).
TRAIN_IMAGE = default_images()["train"]


def _component_decorator(image: str) -> Callable[[Callable[..., Any]], Any]:
    # Inside a running task kfp puts kfp.dsl in runtime mode (no dsl.component), and the task
    # imports the component's module: there the decorator has nothing to do.
    factory = getattr(dsl, "component", None)
    if factory is None:
        return lambda func: func
    # The images carry kfp and aicrush already: no pip install at task start (kfp's default).
    return partial(factory, base_image=image, install_kfp_package=False)


#: ``@pipeline_component``: a lightweight component on the CPU pipeline image.
pipeline_component = _component_decorator(PIPELINE_IMAGE)
#: ``@train_component``: a lightweight component on the CUDA training image.
train_component = _component_decorator(TRAIN_IMAGE)
