"""Container image references, read from the one place they are kept: the ``images:`` list of
``manifests/base/kustomization.yaml`` (kustomize rewrites the workloads from the same list)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

KUSTOMIZATION = Path(__file__).resolve().parents[1] / "manifests" / "base" / "kustomization.yaml"
RUNTIMES = ("pipeline", "train", "serve", "monitor")


def images_from_manifests() -> bool:
    """Whether :func:`default_images` reads the manifests' ``images:`` list (a checkout)."""
    return KUSTOMIZATION.is_file()


@lru_cache(maxsize=1)
def default_images() -> dict[str, str]:
    """Runtime -> full image reference (``name:tag``). Without the manifests (a wheel install,
    see :func:`images_from_manifests`), the bare names ``aicrush-<runtime>:latest``, which no
    cluster can pull: compile from a checkout whose manifests name your registry."""
    images = {rt: f"aicrush-{rt}:latest" for rt in RUNTIMES}
    if not KUSTOMIZATION.is_file():
        return images
    doc = yaml.safe_load(KUSTOMIZATION.read_text()) or {}
    for entry in doc.get("images", []):
        name = str(entry.get("name", ""))
        runtime = name.removeprefix("aicrush-")
        if runtime in images:
            images[runtime] = f"{entry.get('newName', name)}:{entry.get('newTag', 'latest')}"
    return images
