"""The status page: a built-in web page at `/` of the HTTP server, for people (see routes.py)."""

from obsmcp.web.routes import status_routes

__all__ = ["status_routes"]
