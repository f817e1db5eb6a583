"""The one call into VROOM (pyvroom): a problem and its travel-time matrix in, VROOM's
JSON solution (its documented output format, as a dict) out.

CPU-bound and blocking: the service runs it in a worker thread. pyvroom renders the JSON
answer by redirecting `sys.stdout` for a moment, so calls are serialised by a lock (a
plan at a time per process is what two cores allow anyway).
"""

from __future__ import annotations

import threading
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


def _input(problem: Problem, seconds: np.ndarray) -> vroom.Input:
    n = len(problem.locations)
    if seconds.shape != (n, n):
        raise ValueError(f"matrix is {seconds.shape}, the problem has {n} locations")
    inp = vroom.Input()
    inp.set_durations_matrix(PROFILE, np.ascontiguousarray(seconds, dtype=np.uint32))
    for k, van in enumerate(problem.vans):
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
