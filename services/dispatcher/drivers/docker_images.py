"""Making sure a run's image is on the engine, by the payload's pull policy, before its container exists.

A missing image or a failed pull fails the run with the engine's own words and nothing ever ran.
"""

from __future__ import annotations

import aiodocker
import aiohttp

from contracts.payloads import PullPolicy
from services.dispatcher.drivers.base import StartFailed


async def ensure_image(docker: aiodocker.Docker, image: str, policy: PullPolicy) -> None:
    if policy != "always" and await _present(docker, image):
        return
    if policy == "never":
        raise StartFailed(f"image {image!r} is not on the engine and the pull policy is 'never'")
    try:
        await docker.images.pull(image)
    except aiodocker.DockerError as exc:
        raise StartFailed(f"could not pull image {image!r}: {exc.message}") from None
    except aiohttp.ClientError as exc:
        raise StartFailed(f"could not pull image {image!r}: {exc}") from None


async def _present(docker: aiodocker.Docker, image: str) -> bool:
    try:
        await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return False
        raise StartFailed(f"could not look up image {image!r}: {exc.message}") from None
    return True
