"""Make a job's image present on the engine under the node's pull policy.

    if-not-present  pull only when the engine does not have the image (the default)
    always          pull every time (a tag may have moved in the registry)
    never           the image must already be on the engine

`name@sha256:...` is passed to the engine as is, so a digest pins the exact image.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from computenode import progress
from computenode.errors import ImageUnavailable

log = logging.getLogger(__name__)


class ImagesSeen:
    """Images seen present on the engine lately, so a run of jobs on one image inspects it once.

    Only for if-not-present: `always` pulls every time and `never` must fail when the image is
    gone, so both still ask the engine each run.
    """

    TTL_S = 60.0
    MAX_IMAGES = 256

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._seen: dict[str, float] = {}  # image -> time.monotonic() when last seen present

    def recent(self, image: str) -> bool:
        at = self._seen.get(image)
        return at is not None and time.monotonic() - at < self.ttl_s

    def add(self, image: str) -> None:
        now = time.monotonic()
        if len(self._seen) >= self.MAX_IMAGES:  # bounded: expired entries go first, then all
            self._seen = {i: at for i, at in self._seen.items() if now - at < self.ttl_s}
            if len(self._seen) >= self.MAX_IMAGES:
                self._seen.clear()
        self._seen[image] = now

    def discard(self, image: str) -> None:
        self._seen.pop(image, None)


async def ensure_image(docker: aiodocker.Docker, image: str, policy: str, pull_timeout_s: float) -> None:
    """Raise ImageUnavailable naming the image and the engine's or registry's answer."""
    if policy != "always" and await has_image(docker, image):
        return
    if policy == "never":
        raise ImageUnavailable(f"image {image} is not on this node and its pull policy is never")
    await pull(docker, image, pull_timeout_s)


async def has_image(docker: aiodocker.Docker, image: str) -> bool:
    try:
        await docker.images.inspect(image)
    except DockerError as exc:
        if exc.status == 404:
            return False
        raise ImageUnavailable(f"cannot inspect image {image}: {exc.message}", retryable=True) from exc
    return True


async def pull(docker: aiodocker.Docker, image: str, timeout_s: float) -> None:
    """Pull under its own timeout, apart from the job's: a slow registry is not the job's fault."""
    log.info("pulling image", extra={"image": image})
    report = progress.current()
    report.stage("pulling image", Image=image)
    layers = PullLayers()
    try:
        async with asyncio.timeout(timeout_s):
            # Read the progress stream to its end: errors the registry reports mid-stream
            # (manifest unknown, unauthorized) arrive as DockerStreamError.
            async for line in docker.images.pull(image, stream=True):
                if layers.add(line):
                    report.update(Image=image, **layers.detail())
    except TimeoutError as exc:
        raise ImageUnavailable(
            f"pulling image {image} timed out after {seconds_text(timeout_s)} s", retryable=True
        ) from exc
    except DockerError as exc:
        # 5xx and an unreachable engine may pass; a 4xx or an in-stream refusal will not.
        retryable = exc.status >= 500
        raise ImageUnavailable(f"cannot pull image {image}: {exc.message}", retryable=retryable) from exc


class PullLayers:
    """The engine's per-layer pull lines summed: layers seen and done, bytes of the known sizes."""

    # Statuses whose `id` is a layer (others, such as "Pulling from", carry the tag there).
    LAYER = frozenset({"Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum",
                       "Download complete", "Extracting", "Pull complete", "Already exists"})  # fmt: skip
    DONE = frozenset({"Pull complete", "Already exists"})

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        self.total: dict[str, int] = {}
        self.done: set[str] = set()

    def add(self, line: Any) -> bool:
        """Count one stream line; True when the sums changed."""
        if not isinstance(line, dict):
            return False
        layer, status = str(line.get("id") or ""), str(line.get("status") or "")
        if not layer or status not in self.LAYER:
            return False
        before = (len(self.current), sum(self.current.values()), sum(self.total.values()), len(self.done))
        detail = line.get("progressDetail") or {}
        self.current.setdefault(layer, 0)
        if status == "Downloading" and isinstance(detail, dict):
            self.current[layer] = int(detail.get("current") or 0)
            if detail.get("total"):
                self.total[layer] = int(detail["total"])
        elif status == "Download complete" or status in self.DONE:
            self.current[layer] = self.total.get(layer, self.current[layer])
        if status in self.DONE:
            self.done.add(layer)
        after = (len(self.current), sum(self.current.values()), sum(self.total.values()), len(self.done))
        return after != before

    def detail(self) -> dict[str, int]:
        return {
            "Layers": len(self.current),
            "LayersDone": len(self.done),
            "Bytes": sum(self.current.values()),
            "TotalBytes": sum(self.total.values()),
        }


def seconds_text(seconds: float) -> str:
    """2.0 -> "2", 0.25 -> "0.25", 3600.0 -> "3600" (not "3.6e+03" as :g would give)."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")
