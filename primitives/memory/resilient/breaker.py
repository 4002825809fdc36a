"""A circuit breaker: after a connection failure, calls skip the primary until a probe succeeds."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(str, Enum):
    CLOSED = "closed"  # calls go to the primary
    OPEN = "open"  # calls skip the primary until the retry time
    HALF_OPEN = "half_open"  # one probe call is trying the primary


class CircuitBreaker:
    """Closed -> open on a failure; open -> half-open after a delay; one probe decides.

    The delay starts at ``reset_timeout`` seconds and doubles after each failed probe up to
    ``max_reset_timeout``, so a long outage costs one connect attempt every few seconds, never
    one per call; it never gives up on the primary (there is no terminal state).

    Args:
        reset_timeout: First delay before a probe, seconds.
        max_reset_timeout: Cap of the doubling delay, seconds.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        *,
        reset_timeout: float = 1.0,
        max_reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reset_timeout = reset_timeout
        self.max_reset_timeout = max_reset_timeout
        self._clock = clock
        self.state = BreakerState.CLOSED
        self._delay = reset_timeout
        self._retry_at = 0.0
        self.failures = 0  # consecutive

    def allow(self) -> bool:
        """Whether this call may try the primary. In ``OPEN`` past the retry time the first
        caller becomes the probe (state ``HALF_OPEN``) and others keep skipping it."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and self._clock() >= self._retry_at:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def success(self) -> bool:
        """Record a successful primary call; returns ``True`` when this closed an open circuit
        (the moment to replay what was written meanwhile)."""
        recovered = self.state is not BreakerState.CLOSED or self.failures > 0
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._delay = self.reset_timeout
        return recovered

    def failure(self) -> None:
        """Record a failed primary call (connection refused, timed out, lost)."""
        if self.state is BreakerState.HALF_OPEN:
            self._delay = min(self._delay * 2, self.max_reset_timeout)
        self.failures += 1
        self.state = BreakerState.OPEN
        self._retry_at = self._clock() + self._delay
