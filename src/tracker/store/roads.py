"""The road network in PostGIS + pgRouting: loading it, snapping points to it, travel-time
matrices and road paths. Every SQL statement about roads.

pgRouting does the routing: `pgr_dijkstraCostMatrix` for the matrices, `pgr_dijkstra` (with
a combinations table) for the paths of planned routes, `pgr_strongComponents` at import so
points are snapped only to the part of the network every other part can reach and be
reached from. Costs are seconds (`cost_s`, `reverse_cost_s`; negative = closed direction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import numpy as np
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from tracker.planning.roads import Edge

# The graph pgRouting searches: the main component only, both directions as costed.
EDGES_SQL = (
    "SELECT id, source, target, cost_s AS cost, reverse_cost_s AS reverse_cost "
    "FROM road_edges WHERE main"
)


@dataclass(frozen=True, slots=True)
class Network:
    """What is loaded: from which file, how big, when."""

    source: str
    ways: int
    edges: int
    vertices: int
    imported_at: datetime


@dataclass(frozen=True, slots=True)
class Snap:
    """A point's nearest vertex on the main network and how far the point is from it."""

    vertex: int
    lat: float  # the vertex's position
    lon: float
    access_m: float


@dataclass(frozen=True, slots=True)
class Leg:
    """The road path between two vertices: (lat, lon) points, metres and seconds."""

    points: tuple[tuple[float, float], ...]
    length_m: float
    seconds: float


async def network(conn: asyncpg.Connection | asyncpg.Pool) -> Network | None:
    """The loaded network, or None when no roads were imported."""
    row = await conn.fetchrow(
        "SELECT source, ways, edges, vertices, imported_at FROM road_imports "
        "ORDER BY id DESC LIMIT 1"
    )
    if row is None:
        return None
    return Network(row["source"], row["ways"], row["edges"], row["vertices"], row["imported_at"])


async def load(conn: asyncpg.Connection, source: str, ways: int, edges: Sequence[Edge]) -> Network:
    """Replace the whole network with `edges` (one transaction: readers see old or new)."""
    vertex_ids: dict[int, int] = {}
    vertex_rows: list[tuple[int, int, object]] = []
    for edge in edges:
        for node, (lon, lat) in ((edge.source, edge.coords[0]), (edge.target, edge.coords[-1])):
            if node not in vertex_ids:
                vid = len(vertex_ids) + 1
                vertex_ids[node] = vid
                vertex_rows.append((vid, node, shapely.set_srid(shapely.Point(lon, lat), 4326)))
    edge_rows = [
        (
            k + 1,
            e.way_id,
            vertex_ids[e.source],
            vertex_ids[e.target],
            e.road_class,
            e.name,
            e.length_m,
            e.speed_kmh,
            e.cost_s,
            e.reverse_cost_s,
            shapely.set_srid(shapely.LineString(e.coords), 4326),
        )
        for k, e in enumerate(edges)
    ]
    async with conn.transaction():
        await conn.execute("TRUNCATE road_edges, road_vertices")
        await conn.copy_records_to_table(
            "road_vertices", records=vertex_rows, columns=["id", "osm_node_id", "geom"]
        )
        await conn.copy_records_to_table(
            "road_edges",
            records=edge_rows,
            columns=[
                "id",
                "osm_way_id",
                "source",
                "target",
                "class",
                "name",
                "length_m",
                "speed_kmh",
                "cost_s",
                "reverse_cost_s",
                "geom",
            ],
        )
        await conn.execute(
            "UPDATE road_vertices v SET component = c.component FROM pgr_strongComponents("
            "'SELECT id, source, target, cost_s AS cost, reverse_cost_s AS reverse_cost "
            "FROM road_edges') c WHERE c.node = v.id"
        )
        await conn.execute(
            """
            WITH biggest AS (
                SELECT component FROM road_vertices WHERE component IS NOT NULL
                GROUP BY component ORDER BY count(*) DESC, component LIMIT 1
            )
            UPDATE road_edges e SET main = true
            FROM road_vertices s, road_vertices t, biggest b
            WHERE s.id = e.source AND t.id = e.target
              AND s.component = b.component AND t.component = b.component
            """
        )
        await conn.execute(
            "INSERT INTO road_imports (source, ways, edges, vertices) VALUES ($1, $2, $3, $4)",
            source,
            ways,
            len(edge_rows),
            len(vertex_rows),
        )
        await conn.execute("ANALYZE road_edges")
        await conn.execute("ANALYZE road_vertices")
    found = await network(conn)
    assert found is not None
    return found


async def snap(
    conn: asyncpg.Connection | asyncpg.Pool, points: Sequence[tuple[float, float]]
) -> list[Snap]:
    """Each (lat, lon)'s nearest edge of the main network, and the nearer end of it."""
    if not points:
        return []
    rows = await conn.fetch(
        """
        SELECT p.i, v.id AS vertex, ST_Y(v.geom) AS lat, ST_X(v.geom) AS lon,
               ST_Distance(v.geom::geography, p.pt::geography) AS access_m
        FROM (SELECT i, ST_SetSRID(ST_MakePoint(lon, lat), 4326) AS pt
              FROM unnest($1::float8[], $2::float8[]) WITH ORDINALITY AS u(lat, lon, i)) p
        CROSS JOIN LATERAL (
            SELECT e.source, e.target, ST_LineLocatePoint(e.geom, p.pt) AS fraction
            FROM road_edges e WHERE e.main ORDER BY e.geom <-> p.pt LIMIT 1
        ) e
        JOIN road_vertices v ON v.id = CASE WHEN e.fraction < 0.5 THEN e.source ELSE e.target END
        ORDER BY p.i
        """,
        [p[0] for p in points],
        [p[1] for p in points],
    )
    if len(rows) != len(points):
        raise LookupError("the road network has no drivable edge to snap to")
    return [Snap(r["vertex"], r["lat"], r["lon"], float(r["access_m"])) for r in rows]


# Up to this many distinct vertices pgRouting computes the matrix itself; beyond, its
# many-to-many search grows too slow (measured on the Andorra network on a loaded machine:
# 200 vertices 1.2 s, 400 vertices 6.6 s, 718 vertices past 30 s), so the same edges with
# the same costs are searched with SciPy's compiled Dijkstra (one search per source,
# milliseconds) over the graph kept in memory per imported network.
PGR_MATRIX_MAX = 25
# (database, import id, import time) -> (vertex ids, graph): one network at a time.
_GRAPHS: dict[tuple[str, int, datetime], tuple[np.ndarray, csr_matrix]] = {}


async def cost_matrix(
    conn: asyncpg.Connection | asyncpg.Pool, vertices: Sequence[int]
) -> np.ndarray:
    """Seconds between every pair of `vertices` (rows from, columns to); inf = unreachable."""
    unique = sorted(set(vertices))
    where = {v: k for k, v in enumerate(unique)}
    if len(unique) > PGR_MATRIX_MAX:
        out = await _graph_matrix(conn, unique)
    else:
        out = await pgr_matrix(conn, unique)
    pick = np.array([where[v] for v in vertices])
    result: np.ndarray = out[np.ix_(pick, pick)]
    return result


async def pgr_matrix(conn: asyncpg.Connection | asyncpg.Pool, unique: Sequence[int]) -> np.ndarray:
    """pgRouting's `pgr_dijkstraCostMatrix` between distinct vertices (in that order)."""
    where = {v: k for k, v in enumerate(unique)}
    out = np.full((len(unique), len(unique)), np.inf)
    np.fill_diagonal(out, 0.0)
    if len(unique) > 1:
        rows = await conn.fetch(
            "SELECT start_vid, end_vid, agg_cost FROM pgr_dijkstraCostMatrix($1, $2::bigint[], "
            "directed => true)",
            EDGES_SQL,
            list(unique),
        )
        if rows:
            a = np.array([where[r["start_vid"]] for r in rows])
            b = np.array([where[r["end_vid"]] for r in rows])
            out[a, b] = [r["agg_cost"] for r in rows]
    return out


async def _graph_matrix(
    conn: asyncpg.Connection | asyncpg.Pool, unique: Sequence[int]
) -> np.ndarray:
    row = await conn.fetchrow(
        "SELECT current_database() AS db, id, imported_at FROM road_imports "
        "ORDER BY id DESC LIMIT 1"
    )
    current = None if row is None else (row["db"], row["id"], row["imported_at"])
    graph = _GRAPHS.get(current) if current is not None else None
    if graph is None:
        rows = await conn.fetch(
            "SELECT source, target, cost_s, reverse_cost_s FROM road_edges WHERE main"
        )
        graph = build_graph(
            np.array([r["source"] for r in rows], dtype=np.int64),
            np.array([r["target"] for r in rows], dtype=np.int64),
            np.array([r["cost_s"] for r in rows], dtype=float),
            np.array([r["reverse_cost_s"] for r in rows], dtype=float),
        )
        if current is not None:
            if len(_GRAPHS) > 4:
                _GRAPHS.clear()
            _GRAPHS[current] = graph
    return graph_matrix(graph, unique)


def build_graph(
    src: np.ndarray, dst: np.ndarray, fwd: np.ndarray, rev: np.ndarray
) -> tuple[np.ndarray, csr_matrix]:
    """Vertex ids and the directed graph of edges with forward and reverse costs
    (negative = closed), as pgRouting reads them."""
    ids = np.unique(np.concatenate([src, dst]))
    a = np.searchsorted(ids, src)
    b = np.searchsorted(ids, dst)
    open_f, open_r = fwd >= 0, rev >= 0
    tails = np.concatenate([a[open_f], b[open_r]])
    heads = np.concatenate([b[open_f], a[open_r]])
    costs = np.concatenate([fwd[open_f], rev[open_r]])
    # csgraph reads an explicit 0 as "no edge": a zero-cost edge becomes a tiny one.
    costs = np.maximum(costs, 1e-9)
    # Parallel edges would sum in a sparse matrix: keep the cheapest of each pair.
    return ids, _cheapest(tails, heads, costs, len(ids))


def graph_matrix(graph: tuple[np.ndarray, csr_matrix], unique: Sequence[int]) -> np.ndarray:
    """Shortest times between `unique` vertices; inf for a vertex off the graph."""
    ids, csr = graph
    wanted = np.asarray(unique, dtype=np.int64)
    at = np.searchsorted(ids, wanted)
    known = (at < len(ids)) & (ids[np.minimum(at, len(ids) - 1)] == wanted)
    out = np.full((len(wanted), len(wanted)), np.inf)
    np.fill_diagonal(out, 0.0)
    rows = np.nonzero(known)[0]
    if len(rows):
        dist = dijkstra(csr, directed=True, indices=at[rows])
        out[np.ix_(rows, rows)] = dist[:, at[rows]]
    return out


def _cheapest(tails: np.ndarray, heads: np.ndarray, costs: np.ndarray, n: int) -> csr_matrix:
    order = np.lexsort((costs, heads, tails))
    t, h, c = tails[order], heads[order], costs[order]
    first = np.ones(len(t), dtype=bool)
    first[1:] = (t[1:] != t[:-1]) | (h[1:] != h[:-1])
    return csr_matrix((c[first], (t[first], h[first])), shape=(n, n))


async def legs(
    conn: asyncpg.Connection, pairs: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], Leg]:
    """The fastest road path of each (from vertex, to vertex) pair, oriented as driven.

    A pair of one vertex with itself is an empty leg; an unreachable pair is missing.
    """
    wanted = sorted({p for p in pairs if p[0] != p[1]})
    out: dict[tuple[int, int], Leg] = {(a, b): Leg((), 0.0, 0.0) for a, b in pairs if a == b}
    if not wanted:
        return out
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS planner_legs (source bigint, target bigint) "
            "ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("planner_legs", records=wanted)
        rows = await conn.fetch(
            """
            SELECT d.start_vid, d.end_vid, d.path_seq, d.cost, e.length_m,
                   CASE WHEN d.node = e.source THEN e.geom ELSE ST_Reverse(e.geom) END AS geom
            FROM pgr_dijkstra($1, 'SELECT source, target FROM planner_legs', true) d
            JOIN road_edges e ON e.id = d.edge
            ORDER BY d.start_vid, d.end_vid, d.path_seq
            """,
            EDGES_SQL,
        )
    parts: dict[tuple[int, int], list[asyncpg.Record]] = {}
    for r in rows:
        parts.setdefault((r["start_vid"], r["end_vid"]), []).append(r)
    for key, steps in parts.items():
        points: list[tuple[float, float]] = []
        for step in steps:
            for lon, lat in step["geom"].coords:
                point = (float(lat), float(lon))
                if not points or points[-1] != point:
                    points.append(point)
        out[key] = Leg(
            tuple(points),
            float(sum(s["length_m"] for s in steps)),
            float(sum(s["cost"] for s in steps)),
        )
    return out
