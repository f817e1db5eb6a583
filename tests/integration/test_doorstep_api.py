"""The doorstep against a real server and PostGIS: stop details in the routes API, unknown
fields refused by name, driver reports with photo/signature/name/PIN proof (cleaned with
Pillow, stored in PostgreSQL, served only to the dispatcher and that stop's link), far-away
reasons, idempotent re-sync, forged and oversized uploads, the customer's instructions,
reschedule (confirmed by the dispatcher), rating and opt-out, and proof retention."""

from __future__ import annotations

import base64
import io
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from PIL import Image

from tests.conftest import DeviceCreds, Server, add_device
from tracker.store import proofs as proof_store

Json = dict[str, Any]
LAT, LON = 48.137, 11.575
# About 1.1 km north of the stops: "far away".
FAR = {"lat": LAT + 0.01, "lon": LON}


def jpeg_with_gps() -> bytes:
    """A camera-like JPEG that carries EXIF with a GPS position and a camera model."""
    image = Image.new("RGB", (640, 480), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0110] = "PhoneCam 3000"  # Model
    exif[0x0112] = 1  # Orientation
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 8.0, 13.0)
    gps[3], gps[4] = "E", (11.0, 34.0, 30.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), quality=90)
    return out.getvalue()


def signature_png() -> bytes:
    image = Image.new("RGBA", (300, 120), (0, 0, 0, 0))
    for x in range(20, 280):
        image.putpixel((x, 60 + (x % 20) - 10), (0, 0, 0, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def stop(k: int, **extra: Any) -> Json:
    return {
        "lat": LAT,
        "lon": LON + 0.002 * k,
        "name": f"Stop {k}",
        "recipient": f"Customer {k}",
        **extra,
    }


async def make_route(srv: Server, dev: DeviceCreds, stops: list[Json]) -> Json:
    body = {
        "device": dev.unique_id,
        "planned_start": datetime.now(UTC).isoformat(),
        "stops": stops,
        "path": None,
    }
    async with srv.admin() as client:
        r = await client.post("/api/v1/routes", json=body)
    assert r.status_code == 201, r.text
    route: Json = r.json()
    return route


def token_of(stop: Json) -> str:
    return str(stop["tracking_url"].rsplit("/", 1)[1])


async def report(srv: Server, dev: DeviceCreds, route: Json, k: int, **body: Any) -> Any:
    payload = {
        "client_id": str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat(),
        # A few metres from the stop, unless the test says otherwise.
        "location": {"lat": route["stops"][k]["lat"] + 0.00003, "lon": route["stops"][k]["lon"]},
        **body,
    }
    async with srv.client() as client:
        return await client.post(
            f"/api/v1/routes/{route['id']}/stops/{route['stops'][k]['id']}/report",
            json=payload,
            headers=dev.headers,
        )


async def test_stop_details_round_trip_and_unknown_fields(server: Server) -> None:
    dev = await add_device(server)
    details = {
        "address": "Residenzstr. 1, 80333 München",
        "phone": "+49 89 1234567",
        "email": "huber@example.org",
        "notes": "Ring twice; dog is friendly",
        "language": "de",
        "parcels": [
            {"ref": "PKG-1", "description": "Box, 4 kg"},
            {"ref": "RET-9", "description": "Return: shoes", "action": "collect"},
        ],
        "proof": ["signature", "photo"],
        "reschedule_windows": [
            {"window_start": "2026-12-05T09:00:00Z", "window_end": "2026-12-05T11:00:00Z"}
        ],
        "pickup_points": [{"name": "Kiosk Odeonsplatz", "address": "Odeonsplatz 2"}],
    }
    route = await make_route(server, dev, [stop(1, **details), stop(2)])
    first, second = route["stops"]
    assert first["address"] == details["address"]
    assert first["phone"] == "+49 89 1234567" and first["email"] == "huber@example.org"
    assert first["notes"] == details["notes"] and first["language"] == "de"
    assert first["parcels"][1] == {
        "ref": "RET-9",
        "description": "Return: shoes",
        "action": "collect",
    }
    assert first["parcels"][0]["action"] == "deliver"
    assert first["proof_required"] == ["photo", "signature"]
    assert first["pickup_points"][0]["name"] == "Kiosk Odeonsplatz"
    assert "pin" not in first
    assert second["address"] == "" and second["proof_required"] == []
    # The driver's own read has them too.
    async with server.client() as client:
        r = await client.get("/api/v1/routes/current", headers=dev.headers)
    assert r.json()["stops"][0]["address"] == details["address"]

    bad: list[tuple[Json, str]] = [
        ({"stops": [stop(1, adress="typo")]}, "stops[0].adress: unknown field"),
        ({"stops": [stop(1)], "colour": "red"}, "body.colour: unknown field"),
        ({"stops": [stop(1, phone="call me")]}, "stops[0].phone"),
        ({"stops": [stop(1, email="nobody")]}, "stops[0].email"),
        ({"stops": [stop(1, proof=["selfie"])]}, "stops[0].proof"),
        ({"stops": [stop(1, parcels=[{"ref": "A", "weight": 3}])]}, "parcels[0].weight"),
        ({"stops": [stop(1, parcels=[{"ref": "A", "action": "throw"}])]}, "parcels[0].action"),
        (
            {"stops": [stop(1), stop(2)], "path": {"polyline": "_p~iF~ps|U", "colour": 1}},
            "path.colour: unknown field",
        ),
    ]
    async with server.admin() as client:
        for extra, message in bad:
            body = {"device": dev.unique_id, "planned_start": "2026-12-04T08:00:00Z", **extra}
            r = await client.post("/api/v1/routes", json=body)
            assert r.status_code == 400, (extra, r.text)
            assert message in r.json()["message"], r.json()
        r = await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{second['id']}",
            json={"status": "arrived", "note": "x"},
        )
        assert r.status_code == 400 and "body.note: unknown field" in r.json()["message"]


async def test_completion_with_photo_signature_name_and_pin(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    route = await make_route(
        server,
        dev,
        [stop(1, proof=["photo", "signature", "name", "pin"], pin="4711"), stop(2)],
    )
    photo, signature = jpeg_with_gps(), signature_png()
    assert b"PhoneCam" in photo  # the metadata is really there before
    missing = await report(server, dev, route, 0, status="completed", proof={"name": "A. Huber"})
    assert missing.status_code == 422 and missing.json()["error"] == "proof_required"
    assert "proof.photo" in missing.json()["message"]
    proof = {
        "photo": data_url(photo),
        "signature": data_url(signature, "image/png"),
        "name": "A. Huber",
        "pin": "1234",
    }
    wrong = await report(server, dev, route, 0, status="completed", proof=proof)
    assert wrong.status_code == 422 and wrong.json()["error"] == "wrong_pin"
    client_id = str(uuid.uuid4())
    proof["pin"] = "4711"
    ok = await report(server, dev, route, 0, status="completed", proof=proof, client_id=client_id)
    assert ok.status_code == 200, ok.text
    done = ok.json()["stops"][0]
    assert done["status"] == "completed"
    outcome = done["outcome"]
    assert outcome["recipient_name"] == "A. Huber" and outcome["pin_ok"] is True
    assert outcome["distance_m"] < 50 and outcome["far_reason"] == ""
    kinds = {p["kind"]: p["id"] for p in outcome["proofs"]}
    assert set(kinds) == {"photo", "signature"}

    # Stored cleaned: re-encoded JPEG without EXIF (no GPS, no camera) and a PNG signature.
    rows = {
        r["kind"]: r for r in await db.fetch("SELECT * FROM proofs WHERE stop_id = $1", done["id"])
    }
    stored_photo = bytes(rows["photo"]["data"])
    assert stored_photo[:3] == b"\xff\xd8\xff" and b"PhoneCam" not in stored_photo
    assert b"Exif" not in stored_photo
    with Image.open(io.BytesIO(stored_photo)) as img:
        assert img.size == (640, 480) and not img.getexif()
    assert bytes(rows["signature"]["data"])[:8] == b"\x89PNG\r\n\x1a\n"

    # The phone syncs the same report again (its first answer was lost): stored once.
    again = await report(
        server, dev, route, 0, status="completed", proof=proof, client_id=client_id
    )
    assert again.status_code == 200
    count = await db.fetchval("SELECT count(*) FROM stop_reports WHERE stop_id = $1", done["id"])
    assert count == 1

    # The dispatcher and this stop's link see the photo; nobody else does.
    photo_path = f"/api/v1/proofs/{kinds['photo']}"
    async with server.admin() as client:
        r = await client.get(photo_path)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == stored_photo and "no-store" in r.headers["cache-control"]
    async with server.client() as client:
        assert (await client.get(photo_path)).status_code == 401
        assert (await client.get(photo_path, headers=dev.headers)).status_code == 401
        own = token_of(route["stops"][0])
        other = token_of(route["stops"][1])
        r = await client.get(f"/t/{own}/proofs/{kinds['signature']}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert (await client.get(f"/t/{other}/proofs/{kinds['signature']}")).status_code == 404
        details = (await client.get(f"/t/{own}/details")).json()
    assert details["delivery"]["recipient_name"] == "A. Huber"
    assert {p["kind"] for p in details["delivery"]["proofs"]} == {"photo", "signature"}
    assert details["can_rate"] is True and details["pin"] is None


async def test_far_away_needs_a_reason_shown_to_the_dispatcher(server: Server) -> None:
    dev = await add_device(server)
    route = await make_route(server, dev, [stop(1), stop(2)])
    r = await report(server, dev, route, 0, status="completed", location=FAR)
    assert r.status_code == 422 and r.json()["error"] == "far_from_stop"
    assert "far_reason" in r.json()["message"] and " m from the stop" in r.json()["message"]
    r = await report(
        server,
        dev,
        route,
        0,
        status="completed",
        location=FAR,
        far_reason="Customer met me at the corner shop",
    )
    assert r.status_code == 200, r.text
    async with server.admin() as client:
        seen = (await client.get(f"/api/v1/routes/{route['id']}")).json()["stops"][0]
    assert seen["outcome"]["far_reason"] == "Customer met me at the corner shop"
    assert seen["outcome"]["distance_m"] > 1000


async def test_failure_reason_codes_and_next_steps(server: Server) -> None:
    dev = await add_device(server)
    route = await make_route(server, dev, [stop(1), stop(2)])
    cases: list[tuple[Json, str]] = [
        ({"status": "failed"}, "reason_code"),
        ({"status": "failed", "reason_code": "aliens", "next_step": "retry_today"}, "reason_code"),
        ({"status": "failed", "reason_code": "other", "next_step": "retry_today"}, "reason_text"),
        ({"status": "failed", "reason_code": "not_home"}, "next_step"),
        ({"status": "failed", "reason_code": "not_home", "next_step": "fly"}, "next_step"),
        ({"status": "completed", "reason_code": "not_home"}, "only for a failed stop"),
        ({"status": "completed", "extra": 1}, "body.extra: unknown field"),
    ]
    for body, message in cases:
        r = await report(server, dev, route, 0, **body)
        assert r.status_code == 400 and message in r.json()["message"], (body, r.text)
    r = await report(
        server,
        dev,
        route,
        0,
        status="failed",
        reason_code="not_home",
        reason_text="card left",
        next_step="pickup_point",
    )
    assert r.status_code == 200, r.text
    failed = r.json()["stops"][0]
    assert failed["status"] == "failed" and failed["reason"] == "not home: card left"
    assert failed["outcome"]["next_step"] == "pickup_point"
    # A second, different outcome for a done stop is refused (and not stored).
    r = await report(server, dev, route, 0, status="completed")
    assert r.status_code == 409
    async with server.client() as client:
        details = (await client.get(f"/t/{token_of(route['stops'][0])}/details")).json()
    assert details["failure"]["reason_code"] == "not_home"
    assert details["failure"]["next_step_text"].startswith("your parcel waits")


async def test_forged_and_oversized_uploads_are_refused(server_factory: Any) -> None:
    srv = await server_factory(proof_max_bytes=200_000, proof_max_pixels=4_000_000)
    dev = await add_device(srv)
    route = await make_route(srv, dev, [stop(1, proof=["photo"]), stop(2)])
    forged = b"<?php system($_GET['c']); ?>" + b"\x00" * 100
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, "GIF")
    big = io.BytesIO()
    # Noise does not compress: a real PNG of more than 200 kB.
    Image.frombytes("RGB", (300, 300), os.urandom(300 * 300 * 3)).save(big, "PNG")
    huge = io.BytesIO()
    Image.new("1", (5000, 5000)).save(huge, "PNG")  # tiny file, 25 megapixels
    cases = [
        (data_url(forged), 415, "not a JPEG, PNG or WebP"),
        (data_url(gif.getvalue(), "image/gif"), 415, "GIF is not accepted"),
        (data_url(jpeg_with_gps()[:300]), 415, "proof.photo"),
        (data_url(big.getvalue(), "image/png"), 413, "at most 200000"),
        (data_url(huge.getvalue(), "image/png"), 413, "pixels"),
        ("%%%not-base64%%%", 400, "base64"),
    ]
    assert len(big.getvalue()) > 200_000 and len(huge.getvalue()) < 200_000
    for photo, status, message in cases:
        r = await report(srv, dev, route, 0, status="completed", proof={"photo": photo})
        assert r.status_code == status, (message, r.text)
        assert message in r.json()["message"], r.json()
    async with srv.admin() as client:
        r = await client.get(f"/api/v1/routes/{route['id']}")
    assert r.json()["stops"][0]["status"] == "pending"  # nothing happened


async def test_customer_instructions_reschedule_rating_and_opt_out(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    windows = [
        {"window_start": "2026-12-05T09:00:00+00:00", "window_end": "2026-12-05T11:00:00+00:00"},
        {"window_start": "2026-12-05T15:00:00+00:00", "window_end": "2026-12-05T17:00:00+00:00"},
    ]
    route = await make_route(
        server,
        dev,
        [
            stop(1, email="c1@example.org", reschedule_windows=windows, proof=["pin"]),
            stop(2, pickup_points=[{"name": "Kiosk", "address": "Platz 1"}]),
        ],
    )
    link = token_of(route["stops"][0])
    async with server.client() as client:
        details = (await client.get(f"/t/{link}/details")).json()
        assert details["pin"] and len(details["pin"]) == 4  # made up, shown to the customer
        assert details["reschedule"]["allowed"] and len(details["reschedule"]["windows"]) == 2
        r = await client.post(
            f"/t/{link}/instructions",
            json={"instructions": "Leave with neighbour", "safe_place": "Garage"},
        )
        assert r.status_code == 200 and r.json()["safe_place"] == "Garage"
        r = await client.post(f"/t/{link}/instructions", content=b"instructions=x")
        assert r.status_code == 415  # not a cross-site form
        r = await client.post(f"/t/{link}/reschedule", json={"window": 5})
        assert r.status_code == 400
        r = await client.post(f"/t/{link}/reschedule", json={"window": 1})
        assert r.status_code == 201, r.text
        assert r.json()["reschedule"]["request"]["status"] == "pending"
        r = await client.post(f"/t/{link}/reschedule", json={"window": 0})
        assert r.status_code == 409
        r = await client.post(f"/t/{link}/rating", json={"stars": 5})
        assert r.status_code == 409  # not delivered yet
        r = await client.post(f"/t/{'x' * 43}/details")
        assert r.status_code in (404, 405)
        assert (await client.get(f"/t/{'x' * 43}/details")).status_code == 404
    async with server.admin() as client:
        seen = (await client.get(f"/api/v1/routes/{route['id']}")).json()["stops"][0]
        assert seen["instructions"] == "Leave with neighbour"
        requests = (await client.get("/api/v1/reschedules?status=pending")).json()["requests"]
        mine = next(q for q in requests if q["stop_id"] == seen["id"])
        r = await client.post(f"/api/v1/reschedules/{mine['id']}", json={"decision": "confirm"})
        assert r.status_code == 200 and r.json()["status"] == "confirmed"
        seen = (await client.get(f"/api/v1/routes/{route['id']}")).json()["stops"][0]
        assert seen["window_start"].startswith("2026-12-05T15:00")
        r = await client.post(f"/api/v1/reschedules/{mine['id']}", json={"decision": "confirm"})
        assert r.status_code == 404
    # The driver delivers (with the PIN the customer has); then the rating.
    pin = details["pin"]
    r = await report(server, dev, route, 0, status="completed", proof={"pin": pin})
    assert r.status_code == 200, r.text
    async with server.client() as client:
        r = await client.post(f"/t/{link}/instructions", json={"instructions": "late"})
        assert r.status_code == 409
        r = await client.post(f"/t/{link}/rating", json={"stars": 6})
        assert r.status_code == 400
        r = await client.post(f"/t/{link}/rating", json={"stars": 4, "comment": "Quick!"})
        assert r.status_code == 201 and r.json()["rating"]["stars"] == 4
        assert (await client.post(f"/t/{link}/rating", json={"stars": 1})).status_code == 409
        r = await client.post(f"/t/{link}/messages", json={"opt_out": True})
        assert r.status_code == 200 and r.json()["messages"]["opted_out"] is True
    assert (
        await db.fetchval("SELECT count(*) FROM message_opt_outs WHERE address = 'c1@example.org'")
        == 1
    )
    async with server.admin() as client:
        ratings = (await client.get("/api/v1/ratings")).json()["ratings"]
    assert any(x["comment"] == "Quick!" and x["stars"] == 4 for x in ratings)


async def test_proofs_are_purged_with_retention(server: Server, db: asyncpg.Pool) -> None:
    dev = await add_device(server)
    route = await make_route(server, dev, [stop(1), stop(2)])
    r = await report(
        server, dev, route, 0, status="completed", proof={"photo": data_url(jpeg_with_gps())}
    )
    assert r.status_code == 200
    stop_id = route["stops"][0]["id"]
    await db.execute(
        "UPDATE proofs SET created_at = now() - interval '40 days' WHERE stop_id = $1", stop_id
    )
    gone = await proof_store.purge(db, datetime.now(UTC) - timedelta(days=30))
    assert gone >= 1
    assert await db.fetchval("SELECT count(*) FROM proofs WHERE stop_id = $1", stop_id) == 0
    outcome = await db.fetchval("SELECT outcome FROM stops WHERE id = $1", stop_id)
    assert outcome["proofs"] == []


@pytest.mark.parametrize("kind", ["photo", "signature"])
async def test_webp_and_transparent_images_are_accepted(server: Server, kind: str) -> None:
    dev = await add_device(server)
    route = await make_route(server, dev, [stop(1), stop(2)])
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (10, 200, 10, 128)).save(out, "WEBP")
    r = await report(
        server,
        dev,
        route,
        0,
        status="completed",
        proof={kind: data_url(out.getvalue(), "image/webp")},
    )
    assert r.status_code == 200, r.text


async def test_a_device_cannot_skip_the_proof_with_a_plain_status_change(server: Server) -> None:
    dev = await add_device(server)
    route = await make_route(server, dev, [stop(1, proof=["signature"]), stop(2)])
    first, second = (s["id"] for s in route["stops"])
    async with server.client() as client:
        r = await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{first}",
            json={"status": "completed"},
            headers=dev.headers,
        )
        assert r.status_code == 422 and r.json()["error"] == "proof_required"
        assert "/report" in r.json()["message"]
        # A stop without proof requirements still can be; the dispatcher always can.
        r = await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{second}",
            json={"status": "completed"},
            headers=dev.headers,
        )
        assert r.status_code == 200
    async with server.admin() as client:
        r = await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{first}", json={"status": "completed"}
        )
    assert r.status_code == 200 and r.json()["stops"][0]["status"] == "completed"
