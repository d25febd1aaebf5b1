"""The sidecar's OpenAPI document: error responses, the ``/predict`` body, shared schemas."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.guard import API_KEY_HEADER, is_open
from api.requests import ErrorBody, PredictEvent

PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    408: {"model": ErrorBody, "description": "The body did not arrive in time"},
    413: {"model": ErrorBody, "description": "Body larger than the configured limit"},
    415: {
        "model": ErrorBody,
        "description": "Content-Type is not application/json, or the body is compressed",
    },
    422: {
        "model": ErrorBody,
        "description": "Invalid input; `errors` names the first fields, `error_count` counts",
    },
    503: {
        "model": ErrorBody,
        "description": "MongoDB unavailable, overloaded or past the deadline; see Retry-After",
    },
}
RELOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The new model was refused"},
    415: {"model": ErrorBody, "description": "Content-Type is not application/json"},
}


def predict_body(max_events: int) -> dict[str, Any]:
    """``/predict`` takes one event or a list of 1..``max_events`` (read by hand, off-loop when
    large, so FastAPI does not see a body parameter: it is documented here)."""
    event = {"$ref": "#/components/schemas/PredictEvent"}
    many = {"type": "array", "items": event, "minItems": 1, "maxItems": max_events}
    return {
        "parameters": [
            {
                "name": "challenger",
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
                "description": "Also score with the challenger model: each item becomes "
                '`{"prediction": ..., "challenger": ... or null}`',
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"anyOf": [event, many]}}},
        },
    }


SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
    "Bearer": {"type": "http", "scheme": "bearer"},
}
UNAUTHORISED = {
    "description": "Missing or wrong API key",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def _require_key(schema: dict[str, Any]) -> None:
    """Every operation but the open ones needs the key (either header), and may answer 401."""
    schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    schema["security"] = [{"ApiKey": []}, {"Bearer": []}]
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            if is_open(path):
                operation["security"] = []
            else:
                operation.setdefault("responses", {}).setdefault("401", UNAUTHORISED)


def document(app: FastAPI, max_features: int, *, keyed: bool = False) -> None:
    """Install the app's OpenAPI builder: FastAPI's, plus the ``PredictEvent`` schema the
    hand-written request body refers to (``event_id`` may be null; at most ``max_features``
    features), and with an API key (``keyed``) the security schemes and the 401 answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            event_schema = PredictEvent.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components.update(event_schema.pop("$defs", {}))
            fields = event_schema["properties"]
            fields["event_id"] = {
                "anyOf": [fields["event_id"], {"type": "null"}],
                "description": "omitted or null: one is generated",
            }
            for shape in fields["features"]["anyOf"]:
                if shape.get("type") == "object":
                    shape["maxProperties"] = max_features
            components["PredictEvent"] = event_schema
            components.setdefault("ErrorBody", ErrorBody.model_json_schema())
            if keyed:
                _require_key(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
