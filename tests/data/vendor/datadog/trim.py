"""Regenerate openapi-v1.json / openapi-v2.json: the operations obsmcp's Datadog source calls, with every
component they reference. Run with any Python that has PyYAML, on Datadog's published specifications:

    python trim.py v1/openapi.yaml v2/openapi.yaml

(.generator/schemas/{v1,v2}/openapi.yaml of github.com/DataDog/datadog-api-client-python; see README.md).
"""

import datetime
import json
import sys
from pathlib import Path

import yaml

OPERATIONS = {
    "v1": [
        ("/api/v1/query", "get"),
        ("/api/v1/metrics", "get"),
        ("/api/v1/metrics/{metric_name}", "get"),
        ("/api/v1/validate", "get"),
    ],
    "v2": [
        ("/api/v2/logs/events/search", "post"),
        ("/api/v2/spans/events/search", "post"),
        ("/api/v2/apm/services", "get"),
    ],
}


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(tuple(ref[len("#/components/") :].split("/")))
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)


def trim(spec, ops):
    paths = {}
    for path, method in ops:
        paths.setdefault(path, {})[method] = spec["paths"][path][method]
    wanted, done = set(), set()
    refs(paths, wanted)
    while wanted - done:
        key = sorted(wanted - done)[0]
        done.add(key)
        refs(spec["components"][key[0]][key[1]], wanted)
    components = {"securitySchemes": spec["components"]["securitySchemes"]}
    for section, name in sorted(done):
        components.setdefault(section, {})[name] = spec["components"][section][name]
    return {
        "openapi": spec["openapi"],
        "info": spec["info"],
        "servers": spec["servers"],
        "paths": paths,
        "components": components,
    }


def plain(o):
    if isinstance(o, (datetime.datetime, datetime.date)):
        return o.isoformat().replace("+00:00", "Z")
    raise TypeError(o)


if __name__ == "__main__":
    here = Path(__file__).parent
    for version, source in zip(("v1", "v2"), sys.argv[1:3], strict=True):
        spec = yaml.safe_load(Path(source).read_text())
        out = trim(spec, OPERATIONS[version])
        (here / f"openapi-{version}.json").write_text(json.dumps(out, indent=1, sort_keys=True, default=plain) + "\n")
