"""When a stop's new ETA is worth a `stop.eta_changed` event: when what a customer or a
dispatcher is shown changes materially.

What they are shown is a clock time to the minute ("10:42"). So a new ETA is published
when, against the one published last for the stop:

1. the shown minute changes (an ETA that still reads 10:42 tells nobody anything), and
2. it moved by at least `eta_change_s` (60 s) and `eta_change_frac` (10 %) of the time
   still to go: 12 minutes out, a one-minute wobble is noise; two minutes before arrival it
   is news. The threshold is against the last *published* ETA, not the last computed one,
   so an ETA wandering back and forth inside the band stays quiet (hysteresis);
3. and, while the stop is more than `eta_hold_beyond_s` (15 min) away, at least
   `eta_hold_s` (120 s) have passed since the stop's last event, unless the move is large
   (at least `eta_jump` times the threshold): far out a drift does not turn into an event
   per minute, a real jump (a jam, a long stop) is told at once; in the last quarter hour,
   which customers watch (and the TransitApp benchmark rates), nothing is held.

Two moments relax rules 2 and 3 to rule 1 alone, because the customer looks then: the
stop becomes the next one (the vehicle left the stop before, or it was completed or
skipped), and the stop is announced as arriving (`stop.arriving`). The first ETA of a stop
is always published.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tracker.core.route.config import EtaConfig
from tracker.core.route.state import StopState


def minute(epoch_s: float) -> int:
    """The clock minute an ETA is shown as (time zones differ from UTC by whole minutes)."""
    return math.floor(epoch_s / 60.0)


def material(
    old: float | None,
    new: float,
    t: float,
    last_s: float | None,
    relaxed: bool,
    cfg: EtaConfig,
) -> bool:
    """Whether a stop's ETA `new` (epoch s) is worth an event at time `t`.

    `old` is the ETA published last for the stop (None: none yet), `last_s` when it was
    published (None: unknown, no hold), `relaxed` says the stop just became the next one
    or is being announced as arriving.
    """
    if old is None:
        return True
    if minute(new) == minute(old):
        return False
    if relaxed:
        return True
    move = abs(new - old)
    floor = max(cfg.eta_change_s, cfg.eta_change_frac * max(0.0, new - t))
    if move < floor:
        return False
    # Within the last quarter hour (what customers watch, and what TransitApp rates) a
    # change past the threshold is told at once: no hold.
    held = last_s is not None and t - last_s < cfg.eta_hold_s and new - t > cfg.eta_hold_beyond_s
    return not held or move >= cfg.eta_jump * floor


def became_next_s(stops: Sequence[StopState]) -> float:
    """When the stop now next became next: the latest departure or outcome of any stop
    (0 before any: the first stop has been next since the start)."""
    latest = 0.0
    for s in stops:
        for v in (s.departed_s, s.done_s):
            if v is not None and v > latest:
                latest = v
    return latest
