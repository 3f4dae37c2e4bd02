"""The OpenAPI 3.1 document of the HTTP API (docs/ARCHITECTURE.md §3), generated from the model.

The component schemas come from the msgspec structs in :mod:`talicada.schema.model`,
then are rewritten from the canonical form (short kind names) to the wire form of
the v1.0 dialect (kind URIs from :mod:`talicada.schema.kinds`). The paths are
written by hand in :mod:`talicada.schema._openapi_paths`, and a test keeps them in
step with the routes; this module assembles the document and writes it.

Run ``python -m talicada.schema.openapi [--check] [DIR]`` to (re)write, or check,
the copies checked in under ``schema/``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import yaml

from talicada import __version__
from talicada.schema import _openapi_paths, _openapi_schemas
from talicada.schema._openapi_paths import MEDIA_TYPES as MEDIA_TYPES
from talicada.schema._openapi_schemas import component_schemas as component_schemas

#: Where ``python -m talicada.schema.openapi`` writes by default: ``<repo>/schema``.
DEFAULT_DIRECTORY: Final = Path(__file__).resolve().parents[2] / "schema"
FILE_NAMES: Final = ("openapi.json", "openapi.yaml")

_DESCRIPTION: Final = """\
Talicada brokers the execution of astronomy software on science platforms. A client \
describes what it wants to run and the compute, storage and data it needs; the broker \
answers with an offer set, and accepting one offer turns it into a session whose \
lifecycle the client can follow and steer.

Requests are accepted in three dialects of the execution-broker model: seed-2025, v1.0 \
and v1.0.6. They differ in how a component names its kind (`type` or `kind`, and the \
form of the kind URI) and where its identity lives; every answer is written in the \
dialect of the request it belongs to, unless the reader asks for another with \
`?dialect=`. This document shows the v1.0 spelling: a `kind` discriminator holding a v1.0 \
kind URI, and identity under `meta`; pass `dialect=v1.0` to read any session in it. Bodies may be \
JSON, YAML or XML, chosen by `Content-Type` and `Accept` (JSON when nothing is asked). \
XML follows the community schema's XML names, given here as `xml` hints: `kind` is an \
attribute and each list holds elements named for one member \
(`<offers><execution kind="…">`); lists written with `<item>` members are still read.
"""


# -- the document ------------------------------------------------------------------------


def _components() -> dict[str, Any]:
    return {
        "schemas": component_schemas(),
        "parameters": {
            "uuid": {
                "name": "uuid",
                "in": "path",
                "required": True,
                "description": "The uuid the broker gave the offer set or session.",
                "schema": {"type": "string", "format": "uuid"},
            },
            "dialect": {
                "name": "dialect",
                "in": "query",
                "required": False,
                "description": "Write the answer in this dialect (default: the dialect of the "
                "request that made the offer set or session). This document describes v1.0: a "
                "client generated from it passes `dialect=v1.0` to read every session.",
                "schema": _openapi_schemas.ref("Dialect"),
            },
        },
        "headers": {
            "Location": {
                "description": "The URL of the offer set or session.",
                "schema": {"type": "string", "format": "uri"},
            },
            "Cache-Control": {
                "description": "On every offer-set answer, YES or NO: `private, max-age=N`, "
                "N the seconds of the body's `ttl`. A YES stays valid until its offers "
                "expire; a NO as long as the same request would get the same NO (long when "
                "no platform can ever run it, short when only capacity is lacking).",
                "schema": {"type": "string", "examples": ["private, max-age=300"]},
            },
        },
        "responses": {
            name: {
                "description": description,
                "content": _openapi_paths.content(_openapi_schemas.ref("ErrorResponse")),
            }
            for name, description in _openapi_paths.ERRORS.values()
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from the broker's token file (not checked in embedded "
                "mode, where every caller is anonymous).",
            },
            "callbackSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Talicada-Signature",
                "description": "Workers sign each report: 'sha256=' and the HMAC-SHA256, with "
                "the deployment's callback secret, of the X-Talicada-Timestamp value, a dot and "
                "the body. Reports more than 5 minutes from the broker's clock are refused.",
            },
        },
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of the HTTP API, in the v1.0 wire spelling."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Talicada execution broker",
            "version": __version__,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "offers", "description": "Execution requests and the offers they get."},
            {"name": "sessions", "description": "Accepted offers and their lifecycle."},
            {"name": "service", "description": "Service description, probes and this document."},
        ],
        "servers": [
            {
                "url": "http://127.0.0.1:8082",
                "description": "A broker started on this machine by `make run`; "
                "a deployment serves the same paths under its own base URL.",
            }
        ],
        # Every operation repeats its own; this covers any added without one.
        "security": [{"bearer": []}],
        "paths": _openapi_paths.paths(),
        "components": _components(),
    }


@functools.cache
def document_bytes() -> tuple[bytes, bytes]:
    """The document encoded once: (indented JSON, YAML), each ending in a newline."""
    text = json.dumps(build_document(), indent=2, ensure_ascii=False) + "\n"
    # YAML from the parsed JSON: both files then say exactly the same thing, and
    # no object is shared, which safe_dump would write as an anchor and alias.
    tree = json.loads(text)
    yaml_text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    return text.encode("utf-8"), yaml_text.encode("utf-8")


def write(directory: Path) -> list[Path]:
    """Write ``openapi.json`` and ``openapi.yaml`` into ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in zip(FILE_NAMES, document_bytes(), strict=True):
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written


def stale(directory: Path) -> list[Path]:
    """The files in ``directory`` that are missing or differ from the model."""
    return [
        directory / name
        for name, content in zip(FILE_NAMES, document_bytes(), strict=True)
        if not (directory / name).is_file() or (directory / name).read_bytes() != content
    ]


def _print(paths: Iterable[Path], prefix: str) -> None:
    for path in paths:
        print(f"{prefix} {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Write the document into DIR, or with ``--check`` exit 1 if it is stale."""
    parser = argparse.ArgumentParser(
        prog="python -m talicada.schema.openapi",
        description="Generate the OpenAPI document of the Talicada HTTP API from the model.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that the files are up to date"
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=DEFAULT_DIRECTORY,
        metavar="DIR",
        help=f"where openapi.json and openapi.yaml live (default: {DEFAULT_DIRECTORY})",
    )
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.directory)
        if outdated:
            _print(outdated, "stale:")
            where = "" if args.directory == DEFAULT_DIRECTORY else f" {args.directory}"
            print(f"run `python -m talicada.schema.openapi{where}` to regenerate", file=sys.stderr)
            return 1
        return 0
    _print(write(args.directory), "wrote")
    return 0


if __name__ == "__main__":
    sys.exit(main())
