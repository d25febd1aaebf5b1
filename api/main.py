"""Entry point for uvicorn: ``uvicorn --factory api.main:app_from_environment``."""

from __future__ import annotations

from fastapi import FastAPI

from api.app import create_app
from settings import load_settings
from telemetry import logs


def app_from_environment() -> FastAPI:
    settings = load_settings()
    logs.configure(settings.log_level)
    return create_app(settings)
