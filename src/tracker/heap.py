"""Garbage-collector settings for a serving process.

A server holds many long-lived objects (route plans and states, the fleet's last
positions, per-device caches) and allocates short-lived ones at a high rate. With
CPython's default thresholds (700, 10, 10) objects that live a second, such as the route
states between two fixes, are promoted to the oldest generation, so a full collection
that walks the whole heap ran every 2-3 s and paused the event loop for 200-400 ms at
1,000 routed devices (`bench/fleet_bench.py --paced`: ack p99 290 ms, ETA p99 2.3 s).
Rarer young collections let such objects die by reference counting first, and freezing
what start-up built (modules, the app) keeps it out of every later collection. Memory is
freed by reference counting as before; only cyclic garbage waits longer.
"""

from __future__ import annotations

import gc

YOUNG = 50_000  # allocations between young collections (default 700)
MIDDLE = 20  # young collections per middle one (default 10)
OLD = 100  # middle collections before a full one is considered (default 10)


def tune() -> None:
    """Apply the serving thresholds and freeze everything allocated so far."""
    gc.collect()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
    gc.freeze()
