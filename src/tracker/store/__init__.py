"""PostgreSQL/PostGIS edge: the only package that talks SQL."""
