"""A per-client limit on new anonymous rater sessions.

Anyone who can open the study page can become a rater, so without a limit one
client could create sessions until ``--max-raters`` is used up (300 took 17 s),
or collect many sessions to compare the images they are shown.  The limit is a
sliding window per client address: at most ``limit`` new sessions in any
``window_seconds``.  IPv6 clients are grouped by /64, the block one subscriber
usually gets, so rotating addresses inside it does not help.

The counts live in memory only: the study stores no IP address (the consent
text promises that), and a restarted server starts counting afresh.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque

# Forget clients that have been quiet for a whole window once this many are held.
_SWEEP_AT = 10_000


def client_key(host: str | None) -> str:
    """The identity a limit counts against: the IPv4 address, or the IPv6 /64."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class ClientRateLimit:
    """At most ``limit`` events per client in any ``window_seconds``; ``limit == 0`` means no limit.

    Thread-safe (the server answers from a thread pool).  ``clock`` is injectable for tests.
    """

    def __init__(self, limit: int, window_seconds: float, clock=time.monotonic):
        self.limit, self.window, self.clock = limit, window_seconds, clock
        self._events: dict[str, deque] = {}
        self._lock = threading.Lock()

    def acquire(self, client: str) -> float | None:
        """Count one event for ``client``; None if allowed, else the seconds until it would be."""
        if self.limit <= 0:
            return None
        now = self.clock()
        with self._lock:
            events = self._events.setdefault(client, deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                return events[0] + self.window - now
            events.append(now)
            if len(self._events) > _SWEEP_AT:
                self._events = {k: v for k, v in self._events.items() if v and v[-1] > now - self.window}
            return None
