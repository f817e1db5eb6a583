"""Path parameter types: `{name:id}` is a database id (bigint), `{name:any}` the rest of
the path, whatever it holds.

Starlette's `int` takes any number of digits, and a number past 2^63-1 makes asyncpg fail
the query (a 500). Up to 18 digits is always below 2^63, so a longer number is simply a
path no route matches: the same 404 as any unknown id.
"""

from __future__ import annotations

from starlette.convertors import IntegerConvertor, PathConvertor, register_url_convertor


class IdConvertor(IntegerConvertor):
    """A non-negative integer that fits PostgreSQL's bigint."""

    regex = "[0-9]{1,18}"


register_url_convertor("id", IdConvertor())


class AnyConvertor(PathConvertor):
    """The rest of the path, whatever it holds: slashes, and newlines too (`path` stops at
    a newline, so such a path would match no route at all)."""

    regex = "(?s:.*)"


register_url_convertor("any", AnyConvertor())
