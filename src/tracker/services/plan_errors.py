"""What planning and editing a plan refuse, as the API maps them to statuses."""

from __future__ import annotations


class PlanRefused(ValueError):
    """The request cannot be planned as asked (400); the message names the problem."""


class PlanNotFound(LookupError):
    """No such plan."""


class PlanConflict(ValueError):
    """The plan cannot be changed or dispatched as it stands (409): already dispatched, an
    order changed meanwhile, a vehicle without a device."""
