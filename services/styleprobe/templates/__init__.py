"""The Jinja2 templates of the HTML reports (explanation, cohort, evaluation), autoescaped."""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


def data_uri(data: bytes) -> str:
    """``data`` (PNG, or GIF by its magic bytes) as a base64 ``data:`` URI."""
    mime = "image/gif" if data[:3] == b"GIF" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


@cache
def _environment() -> Environment:
    environment = Environment(loader=PackageLoader("styleprobe", "templates"),
                              autoescape=select_autoescape(["html.j2"]),
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["data_uri"] = data_uri
    return environment


def render_template(name: str, **context: Any) -> str:
    """The template ``name`` of this folder rendered with ``context``."""
    return _environment().get_template(name).render(**context)
