"""Put the crash suite's last figures into docs/RELIABILITY.md (or print them).

    python -m tests.reliability.report            print the table
    python -m tests.reliability.report --write F  replace the table between F's markers

``scripts/reliability-report`` runs the suite and then this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tests.reliability.support import FIGURES, saved, table

BEGIN = "<!-- crash-figures:begin -->"
END = "<!-- crash-figures:end -->"


def notes() -> str:
    """One line per scenario with what its figures do not say."""
    return "\n".join(f"- *{item.scenario}*: {item.notes}" for item in saved() if item.notes)


def main(argv: list[str] | None = None) -> int:
    """Print the figures, or write them into a document between its markers."""
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report")
    parser.add_argument("--write", metavar="FILE", help="the Markdown file to update")
    args = parser.parse_args(argv)
    figures = saved()
    if not figures:
        print(f"no figures in {FIGURES}: run the crash suite first", file=sys.stderr)
        return 1
    block = f"{BEGIN}\n{table(figures)}\n\n{notes()}\n{END}"
    if args.write is None:
        print(block)
        return 0
    path = Path(args.write)
    text = path.read_text()
    if BEGIN not in text or END not in text:
        print(f"{path} has no {BEGIN} … {END} markers", file=sys.stderr)
        return 1
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(head + block + tail)
    print(f"wrote the figures of {len(figures)} scenarios into {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
