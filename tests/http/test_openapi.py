"""docs/openapi.yaml describes exactly the routes the app registers, no more, no fewer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gateway.http.routes import add_routes

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _document() -> dict[str, Any]:
    data = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{SPEC} is not a YAML mapping"
    return data


def _registered() -> set[tuple[str, str]]:
    """Every (method, path template) the app answers; aiohttp writes templates as OpenAPI does."""
    app = web.Application()
    add_routes(app)
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        routes.add((route.method.upper(), route.resource.canonical))
    return routes


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_registered_route_is_documented() -> None:
    registered = _registered()
    assert registered, "add_routes registered nothing"
    missing = sorted(registered - _documented(_document()))
    assert not missing, "routes missing from docs/openapi.yaml: " + ", ".join(
        f"{method} {path}" for method, path in missing
    )


def test_every_documented_route_is_registered() -> None:
    extra = sorted(_documented(_document()) - _registered())
    assert not extra, "docs/openapi.yaml documents routes the app does not register: " + ", ".join(
        f"{method} {path}" for method, path in extra
    )


def test_document_parses_and_declares_bearer_auth() -> None:
    doc = _document()
    assert str(doc["openapi"]).startswith("3.1")
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert doc["security"] == [{"bearerAuth": []}]
    assert doc["paths"]["/health"]["get"]["security"] == []


def test_path_parameters_match_their_templates() -> None:
    doc = _document()
    for path, item in doc["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, operation in item.items():
            if method not in METHODS:
                continue
            declared = {
                _resolve(doc, p)["name"]
                for p in [*item.get("parameters", []), *operation.get("parameters", [])]
                if _resolve(doc, p)["in"] == "path"
            }
            assert declared == names, f"{method.upper()} {path}: path parameters {declared}"


def _resolve(doc: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in obj:
        node: Any = doc
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj
