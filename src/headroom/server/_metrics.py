"""Prometheus text for ``/metrics``: a few counters and one latency histogram, kept in process.

Small on purpose: the server exports what an operator watches (requests, upstream latency, memories
stored, queue depth); a process-local registry with a lock needs no client library.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Callable

__all__ = ["Metrics"]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self._latency: dict[str, list[int]] = {}
        self._latency_sum: dict[str, float] = defaultdict(float)
        self.memories_stored = 0
        self.queue_depth: Callable[[], int] | None = None

    def request(self, route: str, status: int) -> None:
        with self._lock:
            self._requests[(("route", route), ("status", str(status)))] += 1

    def upstream(self, route: str, seconds: float) -> None:
        with self._lock:
            counts = self._latency.setdefault(route, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self._latency_sum[route] += seconds

    def stored(self, count: int) -> None:
        with self._lock:
            self.memories_stored += count

    def render(self) -> str:
        lines = ["# HELP headroom_requests_total Requests served, by route and status.",
                 "# TYPE headroom_requests_total counter"]
        with self._lock:
            for labels, count in sorted(self._requests.items()):
                lines.append(f"headroom_requests_total{_labels(labels)} {count}")
            lines += ["# HELP headroom_upstream_seconds Time to the upstream's response headers.",
                      "# TYPE headroom_upstream_seconds histogram"]
            for route, counts in sorted(self._latency.items()):
                for bound, count in zip(BUCKETS, counts):
                    lines.append(f'headroom_upstream_seconds_bucket{{route="{route}",le="{bound}"}} {count}')
                lines.append(f'headroom_upstream_seconds_bucket{{route="{route}",le="+Inf"}} {counts[-1]}')
                lines.append(f'headroom_upstream_seconds_sum{{route="{route}"}} {self._latency_sum[route]:.6f}')
                lines.append(f'headroom_upstream_seconds_count{{route="{route}"}} {counts[-1]}')
            lines += ["# HELP headroom_memories_stored_total Memories stored from replies.",
                      "# TYPE headroom_memories_stored_total counter",
                      f"headroom_memories_stored_total {self.memories_stored}"]
        if self.queue_depth is not None:
            lines += ["# HELP headroom_queue_depth Extraction jobs waiting or running.",
                      "# TYPE headroom_queue_depth gauge", f"headroom_queue_depth {self.queue_depth()}"]
        return "\n".join(lines) + "\n"
