"""Contests pages (being built)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("contests", __name__)
