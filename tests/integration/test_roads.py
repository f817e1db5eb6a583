"""`tracker roads import` of a real OpenStreetMap extract (Monaco) into PostGIS + pgRouting,
then snapping, travel-time matrices and road paths from pgRouting."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from tests.conftest import DATA, own_database, sibling_database_url
from tracker.store import roads
from tracker.store.db import create_pool

MONACO = DATA / "osm" / "monaco.osm.gz"
SRC = Path(__file__).resolve().parents[2] / "src"


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "tracker.tools.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
async def roads_db() -> AsyncIterator[asyncpg.Pool]:
    async with own_database("roads") as url:
        done = run_cli(url, "roads", "import", str(MONACO))
        assert done.returncode == 0, done.stderr
        assert "imported monaco.osm.gz" in done.stdout
        pool = await create_pool(url, 2)
        try:
            yield pool
        finally:
            await pool.close()


async def test_import_builds_a_routable_network(roads_db: asyncpg.Pool) -> None:
    net = await roads.network(roads_db)
    assert net is not None and net.source == "monaco.osm.gz"
    assert net.ways > 300 and net.edges > 500 and net.vertices > 400
    counts = await roads_db.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE main) AS main, "
        "count(*) FILTER (WHERE reverse_cost_s < 0 OR cost_s < 0) AS oneway, "
        "count(DISTINCT class) AS classes, "
        "count(*) FILTER (WHERE class IN ('footway', 'steps', 'pedestrian')) AS walking "
        "FROM road_edges"
    )
    assert counts["n"] == net.edges
    assert counts["main"] > 0.8 * counts["n"]  # most of the city is one connected network
    assert counts["oneway"] > 50  # Monaco has many one-way streets
    assert counts["classes"] >= 5 and counts["walking"] == 0
    # Every edge's cost is its length at its speed, in the open direction(s).
    bad = await roads_db.fetchval(
        "SELECT count(*) FROM road_edges WHERE abs(greatest(cost_s, reverse_cost_s) - "
        "length_m / (speed_kmh / 3.6)) > 0.01"
    )
    assert bad == 0


async def test_one_way_streets_route_around(roads_db: asyncpg.Pool) -> None:
    # One-way edges: each can be driven forward for at most its own cost; back, the way
    # must go around the block for most of them.
    edges = await roads_db.fetch(
        "SELECT source, target, cost_s FROM road_edges WHERE main AND reverse_cost_s < 0 "
        "AND length_m > 40 ORDER BY id LIMIT 30"
    )
    ends = [v for e in edges for v in (e["source"], e["target"])]
    m = await roads.cost_matrix(roads_db, ends)
    forward = [m[2 * k, 2 * k + 1] for k in range(len(edges))]
    backward = [m[2 * k + 1, 2 * k] for k in range(len(edges))]
    assert all(f <= e["cost_s"] + 1e-6 for f, e in zip(forward, edges, strict=True))
    assert sum(b > f + 5 for f, b in zip(forward, backward, strict=True)) > len(edges) / 2
    k = max(range(len(edges)), key=lambda i: backward[i] - forward[i])
    source, target = edges[k]["source"], edges[k]["target"]
    async with roads_db.acquire() as conn:
        legs = await roads.legs(conn, [(source, target), (target, source)])
    there, back = legs[(source, target)], legs[(target, source)]
    assert back.seconds == pytest.approx(backward[k]) and there.seconds == pytest.approx(forward[k])
    assert back.length_m > there.length_m
    rows = await roads_db.fetch(
        "SELECT id, ST_Y(geom) AS lat, ST_X(geom) AS lon FROM road_vertices WHERE id = ANY($1)",
        [source, target],
    )
    at = {r["id"]: (r["lat"], r["lon"]) for r in rows}
    # Paths are oriented as driven: they start at the first vertex and end at the second.
    assert back.points[0] == pytest.approx(at[target])
    assert back.points[-1] == pytest.approx(at[source])


async def test_snap_to_the_nearest_drivable_junction(roads_db: asyncpg.Pool) -> None:
    # Place du Casino, and a point out at sea.
    snaps = await roads.snap(roads_db, [(43.73946, 7.42754), (43.7250, 7.4400)])
    assert snaps[0].access_m < 80
    assert 300 < snaps[1].access_m < 5000
    main = await roads_db.fetchval(
        "SELECT bool_and(e.main) FROM road_edges e WHERE e.source = ANY($1) OR e.target = ANY($1)",
        [s.vertex for s in snaps],
    )
    assert main is True


async def test_reimport_replaces_and_bad_files_are_refused(
    roads_db: asyncpg.Pool, tmp_path: Path
) -> None:
    before = await roads.network(roads_db)
    assert before is not None
    url = sibling_database_url("roads")
    done = run_cli(url, "roads", "import", str(MONACO))
    assert done.returncode == 0, done.stderr
    assert await roads_db.fetchval("SELECT count(*) FROM road_edges") == before.edges
    missing = run_cli(url, "roads", "import", str(tmp_path / "nowhere.osm.pbf"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    junk = tmp_path / "junk.osm"
    junk.write_text("<osm><nothing/></osm>")
    broken = run_cli(url, "roads", "import", str(junk))
    assert broken.returncode == 1 and "version" in broken.stderr
    paths = tmp_path / "paths.osm"
    paths.write_text(
        '<osm version="0.6"><node id="1" lat="0" lon="0"/><node id="2" lat="0" lon="0.001"/>'
        '<way id="3"><nd ref="1"/><nd ref="2"/><tag k="highway" v="footway"/></way></osm>'
    )
    empty = run_cli(url, "roads", "import", str(paths))
    assert empty.returncode == 1 and "no drivable roads" in empty.stderr
    assert await roads_db.fetchval("SELECT count(*) FROM road_edges") == before.edges


async def test_large_matrices_agree_with_pgrouting(roads_db: asyncpg.Pool) -> None:
    """Past PGR_MATRIX_MAX vertices the matrix is searched with SciPy over the same edges:
    it must give exactly pgRouting's times (one-ways, unreachable pairs and all)."""
    ids = [
        r["id"]
        for r in await roads_db.fetch(
            "SELECT DISTINCT v.id FROM road_vertices v JOIN road_edges e "
            "ON e.source = v.id OR e.target = v.id ORDER BY v.id LIMIT 60"
        )
    ]
    ours = await roads._graph_matrix(roads_db, ids)
    theirs = await roads.pgr_matrix(roads_db, ids)
    assert np.isinf(ours).sum() == np.isinf(theirs).sum() > 0  # some are off the main network
    finite = np.isfinite(theirs)
    assert np.allclose(ours[finite], theirs[finite], rtol=1e-9, atol=1e-6)
    assert not np.allclose(ours[finite], ours.T[finite])  # one-ways: not symmetric
    big = await roads.cost_matrix(roads_db, [*ids, *range(1000, 1000 + roads.PGR_MATRIX_MAX)])
    assert big.shape == (60 + roads.PGR_MATRIX_MAX,) * 2
    assert np.allclose(big[:60, :60][finite], theirs[finite])
