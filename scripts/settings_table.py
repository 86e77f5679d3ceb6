"""The README's settings table, generated from ``styleprobe.config.Settings``.

    python scripts/settings_table.py                  # print the table
    python scripts/settings_table.py --write README.md  # rewrite it between the markers (make docs)
    python scripts/settings_table.py --check README.md  # exit 1 if the README's table is stale
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import Field, fields
from pathlib import Path

from styleprobe.config import Settings

START, END = "<!-- settings:start -->", "<!-- settings:end -->"
HEADER = "| variable | default | meaning |\n| --- | --- | --- |"


def shown_default(f: Field[object]) -> str:
    """A field's default as the table shows it."""
    value = f.default
    if f.metadata["shown"] is not None:
        return f"`{f.metadata['shown']}`"
    if value == "":
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def table() -> str:
    """One row per :class:`Settings` field: variable (and ``_FILE`` for secrets), default,
    meaning."""
    rows = [HEADER]
    for f in fields(Settings):
        variable = f"`STYLEPROBE_{f.name.upper()}`"
        if f.metadata["secret"]:
            variable += f" or `STYLEPROBE_{f.name.upper()}_FILE`"
        rows.append(f"| {variable} | {shown_default(f)} | {f.metadata['doc']} |")
    return "\n".join(rows)


def with_table(readme: str) -> str:
    """The README with the generated table between its ``settings`` markers."""
    before, start, rest = readme.partition(START)
    _, end, after = rest.partition(END)
    if not (start and end):
        raise ValueError(f"the README has no {START} ... {END} markers")
    return f"{before}{START}\n{table()}\n{END}{after}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", type=Path, metavar="README", help="rewrite its table")
    action.add_argument("--check", type=Path, metavar="README", help="exit 1 if it is stale")
    args = parser.parse_args()
    if args.write:
        args.write.write_text(with_table(args.write.read_text()))
    elif args.check:
        text = args.check.read_text()
        if with_table(text) != text:
            print(f"{args.check}: the settings table is stale: run make docs", file=sys.stderr)
            return 1
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
