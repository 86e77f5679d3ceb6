"""Routing rules: which model set explains an incoming image.

Rules come from configuration (``STYLEPROBE_GATEWAY_ROUTES``) as a JSON list; a rule
names the model set (and optionally the target and the λ grid) and any of: the calling AE title, the
modality, the body part examined (both compared without case) and a regular expression
searched in the series description (without case). The first rule whose given fields
all match routes the image; an image no rule matches is not explained.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from typing import Any

from pydicom import Dataset


class RoutingError(ValueError):
    """The routing rules cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Route:
    """One rule: the conditions it matches (empty: any) and the model set it chooses."""

    model_set: str
    target: str = ""  # empty: the set's default target
    lambdas: str = ""  # the λ grid, "start:stop:steps"; empty: the service's default
    calling_ae: str = ""
    modality: str = ""
    body_part: str = ""
    series_description: str = ""  # a regular expression, searched without case

    def matches(self, calling_ae: str, ds: Dataset) -> bool:
        """Whether an instance from ``calling_ae`` meets every condition of this rule."""
        checks = (
            (self.calling_ae, calling_ae.strip()),
            (self.modality, str(ds.get("Modality", ""))),
            (self.body_part, str(ds.get("BodyPartExamined", ""))),
        )
        if any(want and want.upper() != have.upper() for want, have in checks):
            return False
        description = str(ds.get("SeriesDescription", ""))
        return not self.series_description or bool(
            re.search(self.series_description, description, re.IGNORECASE))


def parse_routes(text: str) -> list[Route]:
    """The rules of a JSON list; :class:`RoutingError` naming the rule at fault."""
    try:
        raw = json.loads(text or "[]")
    except json.JSONDecodeError as exc:
        raise RoutingError(f"STYLEPROBE_GATEWAY_ROUTES is not JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise RoutingError("STYLEPROBE_GATEWAY_ROUTES must be a JSON list of rules")
    return [_route(index, rule) for index, rule in enumerate(raw)]


def _route(index: int, rule: Any) -> Route:
    known = {f.name for f in fields(Route)}
    if not isinstance(rule, dict):
        raise RoutingError(f"routing rule {index} is not an object")
    unknown = sorted(set(rule) - known)
    if unknown:
        raise RoutingError(f"routing rule {index} has unknown field(s) {', '.join(unknown)}; "
                           f"known: {', '.join(sorted(known))}")
    if not rule.get("model_set"):
        raise RoutingError(f"routing rule {index} names no model_set")
    if not all(isinstance(value, str) for value in rule.values()):
        raise RoutingError(f"routing rule {index}: every field is a string")
    try:
        re.compile(rule.get("series_description", ""))
    except re.error as exc:
        raise RoutingError(f"routing rule {index}: series_description is not a regular "
                           f"expression: {exc}") from exc
    return Route(**rule)


def route(routes: list[Route], calling_ae: str, ds: Dataset) -> Route | None:
    """The first rule that matches, if any."""
    return next((rule for rule in routes if rule.matches(calling_ae, ds)), None)
