"""One fix's journey through the server: the ordered steps, each a pure function.

Like Traccar's handler list, `STEPS` names every stage a fix goes through, in order; unlike
it, no step does I/O. The services run them and are the only code that awaits anything:

    decode ─▶ filter ─▶ store ═▶ 202 ─▶ route progress ─▶ motion/stop events ─▶ ETA ─▶ publish
    protocols  admit()  writer          advance(): core.route.progress.step per fix  messages

- **decode** (`tracker.protocols`): a request body becomes fixes and per-ping rejects.
- **filter** (`admit`): the named checks of `tracker.core.filters` against the device's
  reference fix (its last position, the same on every instance).
- **store** (`tracker.store.writer`): group commit into PostGIS. The phone's 202 is sent
  here, once the fixes are committed, and means nothing more than that.
- **route progress**, **motion/stop events**, **ETA** (`advance`): after the ack, by the
  route work (`tracker.services.route_work`), per device in fix-time order, once per
  stored fix: where the vehicle is along its path, geofence and off-route rules, then the
  ETAs of the remaining stops (`tracker.core.route.stages` holds each of those steps).
- **publish** (`tracker.core.messages`): the new last position after the store, events and
  the route after the route work's commit.

`process` chains them for a single fix without the store, as a replay or a test would.
Everything is a function of (state, fix, now, config): `now` is read once per request by
the service, and route progress uses only the fix's own time.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tracker.core import filters, messages
from tracker.core.model import Event, Fix, JsonDict, Reject
from tracker.core.route import progress
from tracker.core.route.progress import EtaConfig, RoutePlan, RouteState


@dataclass(frozen=True, slots=True)
class Step:
    """One stage of the pipeline: its name, where it lives, and what it does."""

    name: str
    where: str
    does: str


STEPS: tuple[Step, ...] = (
    Step("decode", "tracker.protocols", "request body -> fixes and per-ping rejects"),
    Step("filter", "pipeline.admit", "named checks against the device's reference fix"),
    Step("store", "tracker.store.writer", "group commit into PostGIS, then the 202"),
    Step("route progress", "pipeline.advance", "locate the fix along the route's path"),
    Step("motion/stop events", "pipeline.advance", "geofences, visits, off route"),
    Step("ETA", "pipeline.advance", "pace and the remaining stops' ETAs with intervals"),
    Step("publish", "tracker.core.messages", "position, events and route on the bus"),
)


@dataclass(frozen=True, slots=True)
class Admission:
    """The filter step's verdicts: accepted fixes with their request index (request order)
    and the rejects."""

    accepted: list[tuple[int, Fix]]
    rejects: list[Reject]


def admit(
    fixes: Iterable[tuple[int, Fix]],
    reference: Fix | None,
    now: datetime,
    cfg: filters.FilterConfig,
) -> Admission:
    """The filter step for one device's fixes; `reference` is its last stored position."""
    accepted, rejects = filters.screen(fixes, reference, now, cfg)
    return Admission(accepted, rejects)


def newest(accepted: Sequence[tuple[int, Fix]], advanced: Sequence[bool]) -> Fix | None:
    """The fix that became the device's last position in the store, if any (the new
    reference and the one to publish)."""
    moved = [f for (_, f), yes in zip(accepted, advanced, strict=True) if yes]
    return max(moved, key=lambda f: f.time) if moved else None


@dataclass(slots=True)
class Advance:
    """What a route's stored fixes did: its new state, the events in order, and the ETAs
    of the last fix that changed anything (None: nothing moved)."""

    state: RouteState
    events: list[Event] = field(default_factory=list)
    etas: progress.Progress | None = None
    applied: int = 0


def advance(plan: RoutePlan, state: RouteState, fixes: Iterable[Fix], cfg: EtaConfig) -> Advance:
    """Route progress, motion/stop events and ETA for stored fixes in time order; a fix
    not newer than the state's last one changes nothing (exactly once per fix)."""
    out = Advance(state)
    for fix in fixes:
        out.state, events, etas = progress.step(plan, out.state, fix, cfg)
        if etas is not None:
            out.applied += 1
            out.etas = etas
        out.events.extend(events)
    return out


@dataclass(frozen=True, slots=True)
class DeviceState:
    """Everything the pipeline needs to know about a device between fixes."""

    device: str  # unique id, as published
    name: str | None = None
    reference: Fix | None = None  # last position
    plan: RoutePlan | None = None  # active route, if any
    route: RouteState | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One fix through every step: the new device state, a reject (then nothing else
    happened), the route's events and ETAs, and the bus messages in publishing order."""

    state: DeviceState
    reject: Reject | None = None
    events: tuple[Event, ...] = ()
    etas: progress.Progress | None = None
    messages: tuple[tuple[str, JsonDict], ...] = ()


def process(
    state: DeviceState, fix: Fix, now: datetime, cfg: filters.FilterConfig, eta: EtaConfig
) -> Outcome:
    """Every step for one fix, the store taken as done (as a replay sees it)."""
    admission = admit([(0, fix)], state.reference, now, cfg)
    if admission.rejects:
        return Outcome(state, reject=admission.rejects[0])
    out: list[tuple[str, JsonDict]] = []
    reference = state.reference
    if reference is None or fix.time > reference.time:
        reference = fix
        out.append((messages.POSITIONS, messages.position(state.device, state.name, fix)))
    new = DeviceState(state.device, state.name, reference, state.plan, state.route)
    if state.plan is None or state.route is None:
        return Outcome(new, messages=tuple(out))
    moved = advance(state.plan, state.route, [fix], eta)
    out.extend((messages.EVENTS, messages.event(state.device, e)) for e in moved.events)
    new = DeviceState(state.device, state.name, reference, state.plan, moved.state)
    return Outcome(new, None, tuple(moved.events), moved.etas, tuple(out))
