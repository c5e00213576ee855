"""Rendering the files fleetkit writes on hosts, from Jinja2 templates.

Templates live in ``fleetkit/templates/`` (package data, so an installed
fleetkit has them too), or in ``templates_dir`` from the settings.
``StrictUndefined`` turns a misspelled or missing variable into a
:class:`ConfigError` naming the template and the variable; provisioning
renders every file of every targeted host before it contacts any host, so such
a mistake never leaves a fleet half-written.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jinja2

from fleetkit.foundation.status import ConfigError

#: The templates shipped with fleetkit (package data).
BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"

_UNDEFINED_RE = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


def quote(value: Any) -> str:
    """A YAML/JSON double-quoted scalar: safe for any string, including secrets."""
    return json.dumps(value if isinstance(value, str) else str(value), ensure_ascii=False)


class Renderer:
    """Renders named templates from one directory with strict variables."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory else BUILTIN_TEMPLATES
        self._jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.directory)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        self._jinja.filters["quote"] = quote
        self._jinja.filters["shquote"] = lambda value: shlex.quote(str(value))

    def path_of(self, name: str) -> str:
        return str(self.directory / name)

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render ``name``; every template problem is bad input naming the template."""
        file = self.path_of(name)
        try:
            return self._jinja.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            raise ConfigError("template not found", file=file) from None
        except jinja2.UndefinedError as exc:
            variable = _undefined_name(str(exc))
            raise ConfigError(
                f"undefined template variable {variable!r} ({exc})", file=file, key=variable
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(
                f"template syntax error at line {exc.lineno}: {exc.message}", file=file
            ) from None
        except jinja2.TemplateError as exc:
            raise ConfigError(f"template error: {exc}", file=file) from None


def _undefined_name(message: str) -> str:
    match = _UNDEFINED_RE.search(message)
    if not match:
        return "?"
    return match.group(1) or match.group(2)
