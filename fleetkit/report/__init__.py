"""The fleet report (one static HTML file) and the evidence bundle built on it."""

from __future__ import annotations
