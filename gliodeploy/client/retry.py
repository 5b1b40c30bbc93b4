"""Retry with exponential backoff, for transient server failures only.

A request that failed because the input was invalid (HTTP 4xx, gRPC INVALID_ARGUMENT) fails the
same way every time: retrying it only delays the error, so only :class:`TransientServerError`
(and :class:`ServerUnavailableError`, a server that is starting or restarting) is retried.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from gliodeploy.client.errors import ServerUnavailableError

T = TypeVar("T")
log = logging.getLogger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (ServerUnavailableError,)


def backoff_delays(retries: int, base: float = 0.2, cap: float = 5.0) -> list[float]:
    """Delays before each retry, without jitter: ``base * 2**k`` capped at ``cap``."""
    return [min(cap, base * (2**k)) for k in range(retries)]


def call_with_retries(
    fn: Callable[[], T],
    *,
    retries: int = 3,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    retry_on: tuple[type[BaseException], ...] = RETRYABLE,
    sleep: Callable[[float], None] = time.sleep,
    jitter: bool = True,
) -> T:
    """Call ``fn``; on an exception in ``retry_on`` wait and call again, at most ``retries`` more times.

    The delay doubles each time (``base_delay``, 2x, 4x... capped at ``max_delay``); with ``jitter``
    it is drawn uniformly in [delay/2, delay] so many clients do not hammer a restarting server in
    lockstep. Any other exception propagates at once. After the last retry the last error is raised.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    for attempt, delay in enumerate([*backoff_delays(retries, base_delay, max_delay), None], start=1):
        try:
            return fn()
        except retry_on as exc:
            if delay is None:
                if retries:
                    log.info("giving up after %d attempts: %s", attempt, exc)
                raise
            wait = random.uniform(delay / 2, delay) if jitter else delay
            log.info("attempt %d/%d failed (%s); retrying in %.2f s", attempt, retries + 1, exc, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # the loop always returns or raises
