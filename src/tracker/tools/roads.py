"""`tracker roads import FILE.osm.pbf|.osm|.osm.gz`: load an OpenStreetMap extract as the
road network the planner routes on (PostGIS + pgRouting).

pyosmium reads the file (PBF, XML, gzip- or bzip2-compressed XML) with node locations
cached in memory, so an extract of a city or a region is the intended size. Drivable ways
are cut into edges at junctions (`tracker.planning.roads`) and replace the network in the
database in one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import osmium

from tracker.config import Settings
from tracker.planning import roads
from tracker.store import roads as store
from tracker.store.db import create_pool

# Tags the graph needs; the rest of a way's tags are dropped while reading.
_KEEP = (
    "highway",
    "name",
    "oneway",
    "junction",
    "maxspeed",
    "access",
    "motor_vehicle",
    "motorcar",
    "vehicle",
    "area",
)


def read_ways(path: Path) -> list[roads.Way]:
    """The drivable ways of an OSM file, with their nodes' locations."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    processor = (
        osmium.FileProcessor(str(path))
        .with_locations()
        .with_filter(osmium.filter.KeyFilter("highway"))
    )
    ways: list[roads.Way] = []
    for obj in processor:
        if not isinstance(obj, osmium.osm.Way):
            continue
        tags = {k: obj.tags[k] for k in _KEEP if k in obj.tags}
        if not roads.drivable(tags):
            continue
        nodes = [(n.ref, n.lat, n.lon) for n in obj.nodes if n.location.valid()]
        if len(nodes) >= 2:
            ways.append(roads.Way(obj.id, tags, nodes))
    return ways


async def import_file(database_url: str, path: Path) -> store.Network:
    """Read `path` and replace the stored road network with it."""
    ways = await asyncio.to_thread(read_ways, path)
    if not ways:
        raise ValueError(f"{path}: no drivable roads in this file")
    edges = await asyncio.to_thread(roads.edges, ways)
    pool = await create_pool(database_url, 1)
    try:
        async with pool.acquire() as conn:
            return await store.load(conn, path.name, len(ways), edges)
    finally:
        await pool.close()


def _import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    began = time.monotonic()
    try:
        net = asyncio.run(import_file(Settings.from_env().database_url, path))
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"tracker roads import: {exc}", file=sys.stderr)
        return 1
    print(
        f"imported {net.source}: {net.ways} drivable ways, {net.edges} edges, "
        f"{net.vertices} vertices in {time.monotonic() - began:.1f} s"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tracker roads import`."""
    parser = sub.add_parser("roads", help="the road network the planner routes on")
    rsub = parser.add_subparsers(dest="roads_command", required=True)
    imp = rsub.add_parser(
        "import",
        help="load an OpenStreetMap extract (.osm.pbf, .osm, .osm.gz), replacing the network",
    )
    imp.add_argument("file")
    imp.set_defaults(func=_import)
