"""Customer messages without I/O: their kinds, built-in templates, rendering, quiet hours.

A message is one of five kinds, sent by e-mail and/or SMS to the stop's contact:
`out_for_delivery` (with the tracking link), `arriving` (the ETA is close), `delivered`
(with the proof), `failed` (with the reason and the next step) and `rescheduled` (the
dispatcher confirmed the customer's request). Templates use `$name` placeholders
(`string.Template`); a company's own templates (per kind, channel and language) replace
the built-in ones here, which exist in English and German.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta

OUT_FOR_DELIVERY = "out_for_delivery"
ARRIVING = "arriving"
DELIVERED = "delivered"
FAILED = "failed"
RESCHEDULED = "rescheduled"
KINDS = (OUT_FOR_DELIVERY, ARRIVING, DELIVERED, FAILED, RESCHEDULED)
CHANNELS = ("email", "sms")
# Stale once the moment passed: dropped during quiet hours instead of sent afterwards.
TIME_SENSITIVE = frozenset({ARRIVING})

# The placeholders a template may use (anything else stays as written).
PLACEHOLDERS = (
    "company",
    "recipient",
    "name",
    "address",
    "link",
    "window",
    "eta",
    "time",
    "reason",
    "next_step",
    "received_by",
    "pin",
)

REASONS = {
    "not_home": {"en": "nobody was home", "de": "niemand war zu Hause"},
    "refused": {"en": "the delivery was refused", "de": "die Annahme wurde verweigert"},
    "damaged": {"en": "the parcel was damaged", "de": "das Paket war beschädigt"},
    "no_access": {"en": "the address could not be reached", "de": "kein Zugang zur Adresse"},
    "other": {"en": "another reason", "de": "ein anderer Grund"},
}
NEXT_STEPS = {
    "retry_today": {"en": "we will try again later today", "de": "wir versuchen es heute erneut"},
    "pickup_point": {
        "en": "your parcel waits for you at a pickup point",
        "de": "Ihr Paket liegt an einer Abholstelle bereit",
    },
    "return_to_depot": {
        "en": "your parcel goes back to our depot; we will contact you",
        "de": "Ihr Paket geht an unser Depot zurück; wir melden uns",
    },
}

_EN = {
    (OUT_FOR_DELIVERY, "email"): (
        "$company: your delivery is on its way",
        "Hello $recipient,\n\nyour delivery to $address is out for delivery today ($window).\n"
        "Follow it live: $link\n$pin\n\n$company",
    ),
    (OUT_FOR_DELIVERY, "sms"): ("", "$company: your delivery is on its way ($window). $link $pin"),
    (ARRIVING, "email"): (
        "$company: arriving soon",
        "Hello $recipient,\n\nour driver arrives at $address at about $eta.\n\n$company",
    ),
    (ARRIVING, "sms"): ("", "$company: our driver arrives at about $eta."),
    (DELIVERED, "email"): (
        "$company: delivered",
        "Hello $recipient,\n\nyour delivery to $address was delivered at $time$received_by.\n"
        "The proof of delivery is attached.\n\n$company",
    ),
    (DELIVERED, "sms"): ("", "$company: delivered at $time$received_by."),
    (FAILED, "email"): (
        "$company: we could not deliver",
        "Hello $recipient,\n\nwe could not deliver to $address at $time: $reason.\n"
        "What happens next: $next_step.\n\n$company",
    ),
    (FAILED, "sms"): ("", "$company: not delivered ($reason). Next: $next_step."),
    (RESCHEDULED, "email"): (
        "$company: your delivery was moved",
        "Hello $recipient,\n\nyour delivery is now planned for $window.\n\n$company",
    ),
    (RESCHEDULED, "sms"): ("", "$company: your delivery is now planned for $window."),
}
_DE = {
    (OUT_FOR_DELIVERY, "email"): (
        "$company: Ihre Lieferung ist unterwegs",
        "Hallo $recipient,\n\nIhre Lieferung an $address ist heute unterwegs ($window).\n"
        "Live verfolgen: $link\n$pin\n\n$company",
    ),
    (OUT_FOR_DELIVERY, "sms"): ("", "$company: Ihre Lieferung ist unterwegs ($window). $link $pin"),
    (ARRIVING, "email"): (
        "$company: gleich da",
        "Hallo $recipient,\n\nunser Fahrer ist gegen $eta bei $address.\n\n$company",
    ),
    (ARRIVING, "sms"): ("", "$company: unser Fahrer ist gegen $eta da."),
    (DELIVERED, "email"): (
        "$company: zugestellt",
        "Hallo $recipient,\n\nIhre Lieferung an $address wurde um $time zugestellt"
        "$received_by.\nDer Zustellnachweis ist angehängt.\n\n$company",
    ),
    (DELIVERED, "sms"): ("", "$company: zugestellt um $time$received_by."),
    (FAILED, "email"): (
        "$company: Zustellung nicht möglich",
        "Hallo $recipient,\n\nwir konnten um $time nicht an $address zustellen: $reason.\n"
        "Wie es weitergeht: $next_step.\n\n$company",
    ),
    (FAILED, "sms"): ("", "$company: nicht zugestellt ($reason). Weiter: $next_step."),
    (RESCHEDULED, "email"): (
        "$company: Lieferung verschoben",
        "Hallo $recipient,\n\nIhre Lieferung ist jetzt geplant für $window.\n\n$company",
    ),
    (RESCHEDULED, "sms"): ("", "$company: Ihre Lieferung ist jetzt geplant für $window."),
}
DEFAULTS: dict[str, dict[tuple[str, str], tuple[str, str]]] = {"en": _EN, "de": _DE}


@dataclass(frozen=True, slots=True)
class Template:
    """A subject (e-mail only) and body with `$placeholders`."""

    subject: str
    body: str


def default_template(kind: str, channel: str, language: str) -> Template:
    """The built-in template (English when the language has none)."""
    table = DEFAULTS.get(language.split("-")[0], _EN)
    subject, body = table.get((kind, channel), _EN[(kind, channel)])
    return Template(subject, body)


def check_template(text: str) -> None:
    """ValueError naming a placeholder a template may not use (or a malformed `$`)."""
    try:
        names = string.Template(text).get_identifiers()
    except ValueError as exc:
        raise ValueError(f"malformed placeholder: {exc}") from exc
    if not string.Template(text).is_valid():
        raise ValueError("malformed placeholder (write $$ for a dollar sign)")
    wrong = [n for n in names if n not in PLACEHOLDERS]
    if wrong:
        raise ValueError(f"unknown placeholder ${wrong[0]} (known: {', '.join(PLACEHOLDERS)})")


def render(template: Template, values: Mapping[str, str]) -> Template:
    """The template with its placeholders filled; lines left empty are dropped."""

    def fill(text: str) -> str:
        out = string.Template(text).safe_substitute(values)
        lines = [line.rstrip() for line in out.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()

    return Template(fill(template.subject), fill(template.body))


def label(table: Mapping[str, Mapping[str, str]], code: str | None, language: str) -> str:
    """A reason's or next step's words in `language` (English by default)."""
    if not code or code not in table:
        return ""
    words = table[code]
    return words.get(language.split("-")[0], words["en"])


# -- quiet hours ------------------------------------------------------------------------------

_QUIET = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)-([01]?\d|2[0-3]):([0-5]\d)")


def parse_quiet_hours(text: str) -> tuple[time, time] | None:
    """`"21:00-08:00"` → (21:00, 08:00); empty → None; ValueError if malformed."""
    text = text.strip()
    if not text:
        return None
    match = _QUIET.fullmatch(text)
    if match is None:
        raise ValueError("expected HH:MM-HH:MM, e.g. 21:00-08:00")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = time(h1, m1), time(h2, m2)
    if start == end:
        raise ValueError("quiet hours start and end at the same time")
    return start, end


def quiet_until(now_local: datetime, quiet: tuple[time, time] | None) -> datetime | None:
    """When the quiet period around `now_local` (an aware local time) ends, or None when
    `now_local` is outside it. Periods may span midnight (21:00-08:00)."""
    if quiet is None:
        return None
    start, end = quiet
    clock = now_local.timetz().replace(tzinfo=None)
    day = now_local.replace(hour=end.hour, minute=end.minute, second=0, microsecond=0)
    if start < end:
        return day if start <= clock < end else None
    if clock >= start:
        return day + timedelta(days=1)
    if clock < end:
        return day
    return None
