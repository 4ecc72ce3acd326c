"""Rebuild openapi-subset.json from Sentry's published OpenAPI document (see README.md for provenance).

    python tests/data/vendor/sentry/trim_spec.py path/to/openapi-derefed.json

Keeps only the operations the Sentry source calls (their parameters, security scopes, response schemas and
examples), plus `servers` and `securitySchemes`, so tests validate requests against the vendor's own words.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OPERATIONS = {
    "/api/0/organizations/{organization_id_or_slug}/": "get",
    "/api/0/organizations/{organization_id_or_slug}/projects/": "get",
    "/api/0/organizations/{organization_id_or_slug}/issues/": "get",
    "/api/0/organizations/{organization_id_or_slug}/issues/{issue_id}/": "get",
    "/api/0/organizations/{organization_id_or_slug}/issues/{issue_id}/events/": "get",
    "/api/0/organizations/{organization_id_or_slug}/issues/{issue_id}/events/{event_id}/": "get",
}


def main(source: str) -> None:
    spec = json.loads(Path(source).read_text())
    paths = {path: {method: spec["paths"][path][method]} for path, method in OPERATIONS.items()}
    subset = {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "paths": paths,
        "components": {"securitySchemes": spec["components"]["securitySchemes"]},
    }
    out = Path(__file__).with_name("openapi-subset.json")
    out.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
