"""Pure CSV parsing of orders: columns, delimiters, local times, lines and field names."""

from __future__ import annotations

import pytest

from tracker.planning.csvorders import CsvInvalid, parse_orders


def test_semicolon_file_with_decimal_commas_and_address_parts() -> None:
    text = (
        "\ufeffOrder ID;Customer;Street;House Number;ZIP;City;Country;Date;From;To;Parcels;kg\n"
        "A-1;Ana;Carrer Major;3;AD200;Encamp;Andorra;2030-07-01;09:00;11:30;2;7,5\n"
    )
    (row,) = parse_orders(text, "Europe/Andorra").rows
    assert row.errors == []
    assert row.values is not None
    assert row.values["address"] == "Carrer Major 3, AD200 Encamp, Andorra"
    assert row.values["recipient"] == "Ana"
    assert row.values["size"] == {"parcels": 2.0, "kg": 7.5}
    # Summer in Andorra: UTC+2.
    assert row.values["windows"] == [["2030-07-01T07:00:00+00:00", "2030-07-01T09:30:00+00:00"]]
    assert row.values["geocode_status"] == "pending"


def test_windows_column_with_times_of_day_and_iso_intervals() -> None:
    text = (
        "lat,lon,date,windows,size_crates\n"
        '1,2,2030-01-01,"09:00-10:00; 2030-01-01T15:00:00Z/2030-01-01T16:00:00Z",3\n'
    )
    (row,) = parse_orders(text).rows
    assert row.values is not None
    assert row.values["windows"] == [
        ["2030-01-01T09:00:00+00:00", "2030-01-01T10:00:00+00:00"],
        ["2030-01-01T15:00:00+00:00", "2030-01-01T16:00:00+00:00"],
    ]
    assert row.values["size"] == {"crates": 3.0}


def test_lines_count_quoted_newlines_and_skip_blank_rows() -> None:
    text = 'lat,lon,date,notes\n1,2,2030-01-01,"two\nlines"\n\n1,2,x,\n'
    rows = parse_orders(text).rows
    assert [r.line for r in rows] == [2, 5]
    assert [(e.field, e.message) for e in rows[1].errors] == [
        ("date", "must be a date YYYY-MM-DD (years 2000-2999)")
    ]


def test_a_time_of_day_needs_the_rows_date() -> None:
    (row,) = parse_orders("lat,lon,window_start,window_end\n1,2,09:00,10:00\n").rows
    assert {e.field for e in row.errors} == {"window_start", "window_end", "date"}
    messages = {e.field: e.message for e in row.errors}
    assert "needs a date" in messages["window_start"]
    assert messages["date"] == "required when no window is given"


def test_half_a_window_is_named() -> None:
    (row,) = parse_orders("lat,lon,date,window_start,window_end\n1,2,2030-01-01,09:00,\n").rows
    assert [(e.field, e.message) for e in row.errors] == [
        ("window_end", "a window needs a start and an end")
    ]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("lat,lon,colour\n", "unknown column 'colour'"),
        ("lat,Latitude\n", "repeats"),
        ("lat,,lon\n", "column 2 has no name"),
        ("\n", "header row"),
        ("lat\x00,lon\n", "NUL"),
    ],
)
def test_unusable_headers(text: str, named: str) -> None:
    with pytest.raises(CsvInvalid, match=named):
        parse_orders(text)


def test_too_many_rows() -> None:
    text = "lat,lon,date\n" + "1,2,2030-01-01\n" * 4
    with pytest.raises(CsvInvalid, match="line 5: more than 3 rows"):
        parse_orders(text, max_rows=3)
