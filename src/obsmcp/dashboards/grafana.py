"""Push a dashboard to Grafana through its HTTP API (the operations of Grafana's published OpenAPI spec,
`public/openapi3.json`: getFolders, createFolder, postDashboard), through obsmcp's resilient HTTP client.

- The folder is found by title (`GET /api/folders`), created when missing (`POST /api/folders` with a uid
  derived from the title); a concurrent creation (409) is resolved by looking again.
- `POST /api/dashboards/db` with `overwrite: false` unless asked: Grafana then refuses a dashboard whose uid
  exists (412 `version-mismatch`) or whose title exists in the folder (412 `name-exists`), and obsmcp says how
  to overwrite. POSTs change something, so they are sent exactly once (never retried: a retry after a lost
  answer could save twice); the folder listing is a read and is retried like any other.
- The token goes in the Authorization header only, which the client never logs or prints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from obsmcp.config import Settings
from obsmcp.dashboards.builder import slug
from obsmcp.http import BackendClientConfig, BackendError, BackendHTTPError, backend_client
from obsmcp.http._loop import LOOP
from obsmcp.sources.base import SourceError

# The HTTP client's name for Grafana; capitalised so it can never be a configured backend's name (lowercase).
BACKEND = "Grafana"
TIMEOUT_S = 75.0  # a backstop above the client's own timeouts (connect 5 s + read 30 s, retries on reads)


class GrafanaError(SourceError):
    """Grafana refused or failed, or is not configured; the message says what to do."""


@dataclass(frozen=True)
class Pushed:
    uid: str
    url: str
    version: int
    folder_uid: str
    folder_title: str
    folder_created: bool


def _client_config(settings: Settings) -> BackendClientConfig:
    if not settings.grafana_url:
        raise GrafanaError(
            "no Grafana configured: set grafana_url (OBSMCP_GRAFANA_URL, e.g. http://grafana:3000) and "
            "grafana_token (OBSMCP_GRAFANA_TOKEN, a service account token with dashboards:write)"
        )
    headers = {"Accept": "application/json"}
    if settings.grafana_token is not None:
        headers["Authorization"] = f"Bearer {settings.grafana_token.get_secret_value()}"
    try:
        return BackendClientConfig(name=BACKEND, base_url=settings.grafana_url.rstrip("/"), kind="grafana",
                                   headers=headers, rate_limit=None)  # fmt: skip
    except ValueError as e:
        raise GrafanaError(f"grafana_url: {e}") from None


def _status(e: BackendHTTPError) -> str | None:
    """The `status` field of Grafana's ErrorResponseBody (412: version-mismatch, name-exists, ...)."""
    try:
        body = json.loads(e.excerpt)
    except ValueError:
        return None
    return str(body.get("status")) if isinstance(body, dict) and body.get("status") else None


def _explain(e: BackendError, what: str) -> GrafanaError:
    if isinstance(e, BackendHTTPError) and e.status in (401, 403):
        return GrafanaError(
            f"Grafana answered {e.status} to {what}: the token is missing, wrong or lacks permission "
            "(a service account with the Editor role, or dashboards:write and folders:create)"
        )
    return GrafanaError(f"{what} failed: {e}")


async def _folder(settings: Settings) -> tuple[str, str, bool]:
    """(uid, title, created) of the folder named settings.grafana_folder, created when missing."""
    client = backend_client(_client_config(settings))
    title = settings.grafana_folder
    for attempt in range(2):
        try:
            listing = await client.get_json("/api/folders", {"limit": "1000"})
        except BackendError as e:
            raise _explain(e, "listing Grafana folders") from None
        for f in listing.data or []:
            if isinstance(f, dict) and f.get("title") == title and f.get("uid"):
                return str(f["uid"]), title, False
        if attempt:
            break
        try:
            made = await client.post_json("/api/folders", {"uid": slug(title), "title": title}, idempotent=False)
        except BackendHTTPError as e:
            if e.status in (409, 412):  # created meanwhile (or the uid is taken): look again
                continue
            raise _explain(e, f"creating Grafana folder {title!r}") from None
        except BackendError as e:
            raise _explain(e, f"creating Grafana folder {title!r}") from None
        return str(made.data["uid"]), title, True
    raise GrafanaError(
        f"Grafana folder {title!r} could not be created and is not listed: a folder with uid {slug(title)!r} may "
        "exist under another title; set grafana_folder (OBSMCP_GRAFANA_FOLDER) to another title"
    )


async def _push(settings: Settings, model: dict[str, Any], overwrite: bool, message: str) -> Pushed:
    folder_uid, folder_title, created = await _folder(settings)
    client = backend_client(_client_config(settings))
    body = {
        "dashboard": {**model, "id": None},
        "folderUid": folder_uid,
        "overwrite": overwrite,
        "message": message,
    }
    uid, title = model.get("uid"), model.get("title")
    try:
        answer = await client.post_json("/api/dashboards/db", body, idempotent=False)
    except BackendHTTPError as e:
        status = _status(e)
        if e.status == 412 and status == "version-mismatch":
            raise GrafanaError(
                f"Grafana already has a dashboard with uid {uid!r} (changed since, or made elsewhere): not "
                "overwritten. Push again with overwrite=true to replace it, or create the dashboard under another "
                "name"
            ) from None
        if e.status == 412 and status == "name-exists":
            raise GrafanaError(
                f"folder {folder_title!r} in Grafana already has a dashboard titled {title!r}: not overwritten. "
                "Push again with overwrite=true to replace it, or create the dashboard with another title"
            ) from None
        if e.status == 412 and status == "plugin-dashboard":
            raise GrafanaError(
                f"dashboard {uid!r} belongs to a Grafana plugin: pass overwrite=true to replace it"
            ) from None
        raise _explain(e, "saving the dashboard in Grafana") from None
    except BackendError as e:
        raise _explain(e, "saving the dashboard in Grafana") from None
    data = answer.data if isinstance(answer.data, dict) else {}
    base = settings.grafana_url.rstrip("/") if settings.grafana_url else ""
    return Pushed(
        uid=str(data.get("uid", uid)),
        url=base + str(data.get("url", "")),
        version=int(data.get("version", 0)),
        folder_uid=folder_uid,
        folder_title=folder_title,
        folder_created=created,
    )


def push(settings: Settings, model: dict[str, Any], overwrite: bool = False, message: str = "") -> Pushed:
    """Push `model` into settings.grafana_folder (blocking; from any thread but the HTTP client's loop)."""
    _client_config(settings)  # fail fast, before any request, when Grafana is not configured
    try:
        return LOOP.call(_push(settings, model, overwrite, message or "pushed by obsmcp"), TIMEOUT_S)
    except TimeoutError:
        raise GrafanaError(f"Grafana did not finish within {TIMEOUT_S:g} s: check it and retry") from None
