"""KFP components, one module per step: plain functions that do the work and a thin typed
``@dsl.component`` over them.

``kfp.local.SubprocessRunner`` runs only lightweight Python components, so each component body
imports the installed ``aicrush`` logic (baked into the component image, never
``packages_to_install``) and makes one call.
"""

from pipelines.images import default_images

#: Image of the CPU components (ingest, validate, features, evaluate, register, rollout).
PIPELINE_IMAGE = default_images()["pipeline"]
#: Image of the training component (CUDA build of torch; runs on L4 nodes).
TRAIN_IMAGE = default_images()["train"]
