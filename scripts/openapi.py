#!/usr/bin/env python3
"""Write the service's OpenAPI document to docs/openapi.json, as the app generates it.

    python scripts/openapi.py            # (re)write docs/openapi.json
    python scripts/openapi.py --check    # exit 1 when the committed file is stale

The document comes from FastAPI (``create_app(...).openapi()``) over default settings in
a throw-away home, so it does not depend on who runs this; the service serves the same
document at ``GET /openapi.json``. Nothing is started: no socket, no store is opened.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from connectors.clickhouse import Target  # noqa: E402
from connectors.service.app import create_app  # noqa: E402
from connectors.service.auth import KeyRing  # noqa: E402
from connectors.service.context import ServiceContext  # noqa: E402
from connectors.service.store import Store  # noqa: E402

DOCUMENT = ROOT / "docs" / "openapi.json"
UPDATE = "python scripts/openapi.py"


def document() -> dict[str, Any]:
    """The app's OpenAPI document over default settings (the store is never opened)."""
    with tempfile.TemporaryDirectory(prefix="pulse-openapi-") as home:
        settings = load_settings(environ={"PULSE_HOME": home})
        target = Target(settings.clickhouse_dsn, settings.clickhouse.database)
        context = ServiceContext(settings=settings, keys=KeyRing([]), target=target,
                                 store=Store(target))  # fmt: skip
        return create_app(context).openapi()


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    text = render(document())
    if args.check:
        if DOCUMENT.exists() and DOCUMENT.read_text(encoding="utf-8") == text:
            return 0
        print(f"{_shown(DOCUMENT)} is stale: run `{UPDATE}`", file=sys.stderr)
        return 1
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {_shown(DOCUMENT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
