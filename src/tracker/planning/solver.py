"""The calls into VROOM (pyvroom): a problem and its travel-time matrix in, VROOM's JSON
solution (its documented output format, as a dict) out. `solve` optimises; `check` is
VROOM's plan mode: each vehicle drives the jobs it is given, in the given order, and the
answer has the arrivals and every constraint the order breaks (`violations`: delay, load,
skills, max_travel_time) instead of refusing it.

CPU-bound and blocking: the service runs it in a worker thread. pyvroom renders the JSON
answer by redirecting `sys.stdout` for a moment, so calls are serialised by a lock (a
plan at a time per process is what two cores allow anyway).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import vroom

from tracker.planning.problem import Problem

PROFILE = "car"
_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class SolverOptions:
    """VROOM's search effort: exploration level 0-5, threads, and a time limit."""

    exploration: int = 0
    threads: int = 2
    timeout_s: float | None = None


def _input(
    problem: Problem, seconds: np.ndarray, steps: Mapping[int, Sequence[int]] | None = None
) -> vroom.Input:
    n = len(problem.locations)
    if seconds.shape != (n, n):
        raise ValueError(f"matrix is {seconds.shape}, the problem has {n} locations")
    inp = vroom.Input()
    inp.set_durations_matrix(PROFILE, np.ascontiguousarray(seconds, dtype=np.uint32))
    for k, van in enumerate(problem.vans):
        if steps is not None and not steps.get(k):
            continue  # plan mode: a van without jobs has no route to check
        planned: list[vroom.VehicleStep] = []
        if steps is not None:
            # Plan mode would rather start before the shift (a "lead_time" violation) than
            # be late anywhere: a van cannot leave before its shift, so the start is bounded.
            planned = [
                vroom.VehicleStepStart(service_after=van.window[0]),
                *(vroom.VehicleStepSingle(j) for j in steps[k]),
            ]
        inp.add_vehicle(
            vroom.Vehicle(
                k,
                start=van.start,
                end=van.end,
                profile=PROFILE,
                capacity=list(van.capacity),
                skills=set(van.skills),
                time_window=vroom.TimeWindow(*van.window),
                max_travel_time=van.max_travel_s,
                steps=planned,
            )
        )
    for job in problem.jobs:
        kwargs: dict[str, Any] = {}
        if problem.units:
            kwargs = {"delivery": list(job.delivery), "pickup": list(job.pickup)}
        inp.add_job(
            vroom.Job(
                job.id,
                location=job.location,
                default_service=job.service_s,
                skills=set(job.skills),
                priority=job.priority,
                time_windows=[vroom.TimeWindow(a, b) for a, b in job.windows],
                **kwargs,
            )
        )
    return inp


def solve(problem: Problem, seconds: np.ndarray, options: SolverOptions) -> dict[str, Any]:
    """Solve with VROOM; the answer in VROOM's JSON output format."""
    if not problem.jobs:
        return {"code": 0, "summary": {"cost": 0, "unassigned": 0}, "unassigned": [], "routes": []}
    inp = _input(problem, seconds)
    timeout = None if options.timeout_s is None else timedelta(seconds=options.timeout_s)
    with _LOCK:
        solution = inp.solve(
            exploration_level=options.exploration, nb_threads=options.threads, timeout=timeout
        )
        answer: dict[str, Any] = solution.to_dict()
    return answer


def check(
    problem: Problem, seconds: np.ndarray, steps: Mapping[int, Sequence[int]]
) -> dict[str, Any]:
    """VROOM's plan mode: van `k` (its index in problem.vans) serves the jobs `steps[k]` (job
    ids) in that order. The answer is in the output format of `solve`, with `violations` per
    step and per route; jobs of the problem in no van's steps come back unassigned."""
    if not any(steps.values()):
        return {"code": 0, "summary": {"cost": 0, "unassigned": 0}, "unassigned": [], "routes": []}
    inp = _input(problem, seconds, steps)
    with _LOCK:
        answer: dict[str, Any] = inp.check(nb_threads=1).to_dict()
    return answer
