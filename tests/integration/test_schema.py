"""The migrations produce exactly the schema declared in `tracker.store.schema`."""

from __future__ import annotations

import re
from typing import Any

import geoalchemy2  # noqa: F401 (registers geography for reflection)
from sqlalchemy import CheckConstraint, Inspector, MetaData, UniqueConstraint, inspect
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import own_database
from tracker.store.schema import metadata

# Tables that PostgreSQL extensions own, and the monthly partitions of positions.
FOREIGN = re.compile(r"^(spatial_ref_sys|positions_\d{6})$")
DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]

Description = dict[str, dict[str, Any]]


def _type(t: Any) -> str:
    return str(t.compile(dialect=DIALECT)).lower().replace(" ", "")


def declared(meta: MetaData) -> Description:
    out: Description = {}
    for table in meta.sorted_tables:
        uniques = {
            frozenset(c.name for c in u.columns)
            for u in table.constraints
            if isinstance(u, UniqueConstraint)
        }
        uniques |= {frozenset([c.name]) for c in table.columns if c.unique}
        out[table.name] = {
            "columns": {c.name: (_type(c.type), bool(c.nullable)) for c in table.columns},
            "primary_key": tuple(c.name for c in table.primary_key.columns),
            "foreign_keys": {
                (fk.parent.name, fk.column.table.name, fk.column.name, fk.ondelete)
                for fk in table.foreign_keys
            },
            "uniques": uniques,
            "indexes": {(i.name, bool(i.unique)) for i in table.indexes},
            "checks": sum(isinstance(c, CheckConstraint) for c in table.constraints),
        }
    return out


def reflected(insp: Inspector) -> Description:
    out: Description = {}
    for name in insp.get_table_names():
        if FOREIGN.match(name):
            continue
        fks = set()
        for fk in insp.get_foreign_keys(name):
            for col, ref in zip(fk["constrained_columns"], fk["referred_columns"], strict=True):
                fks.add((col, fk["referred_table"], ref, fk.get("options", {}).get("ondelete")))
        out[name] = {
            "columns": {
                c["name"]: (_type(c["type"]), bool(c["nullable"])) for c in insp.get_columns(name)
            },
            "primary_key": tuple(insp.get_pk_constraint(name)["constrained_columns"]),
            "foreign_keys": fks,
            "uniques": {frozenset(u["column_names"]) for u in insp.get_unique_constraints(name)},
            "indexes": {
                (i["name"], bool(i["unique"]))
                for i in insp.get_indexes(name)
                if "duplicates_constraint" not in i
            },
            "checks": len(insp.get_check_constraints(name)),
        }
    return out


async def test_migrations_produce_the_declared_schema() -> None:
    async with own_database("schema") as url:
        engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            async with engine.connect() as conn:
                actual = await conn.run_sync(lambda sync: reflected(inspect(sync)))
        finally:
            await engine.dispose()
    expected = declared(metadata)
    assert sorted(actual) == sorted(expected), "tables differ"
    for table, want in expected.items():
        assert actual[table] == want, table
