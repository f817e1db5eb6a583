"""CPU-heavy parts of one request, run in a thread so the worker's event loop keeps
answering every other request meanwhile (a 4 MB batch, a million-point path: seconds).

Small inputs stay inline: a thread hop costs more than decoding a single ping, the hot
path. The work must be pure (no event-loop objects); the GIL still passes to the loop
every few milliseconds while the thread runs Python code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# A request body at least this large is decoded in a thread...
HEAVY_BYTES = 64 * 1024
# ...and at least this many pings are filtered and encoded in one.
HEAVY_ITEMS = 1000


async def run(heavy: bool, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(*args, **kwargs)`, in a thread when `heavy`, inline otherwise."""
    if not heavy:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)
