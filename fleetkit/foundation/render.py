"""Rendering the files fleetkit writes on hosts, from Jinja2 templates.

The shipped templates live in ``fleetkit/templates/`` (package data, so an
installed fleetkit has them too). A project overrides them FILE BY FILE: a
template found in the project's templates directory wins, every other one
comes from the package, so a site adapts one unit file without copying (and
then maintaining) the rest. The project's directory is ``templates_dir``
from the settings when set, else ``templates/`` beside ``fleetkit.yaml``
when it exists.

``StrictUndefined`` turns a misspelled or missing variable into a
:class:`ConfigError` naming the template file actually used and the
variable; provisioning renders every file of every targeted host before it
contacts any host, so such a mistake never leaves a fleet half-written.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from fleetkit.foundation.status import ConfigError

if TYPE_CHECKING:
    from fleetkit.foundation.settings import Settings

#: The templates shipped with fleetkit (package data).
BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: A project's overrides, beside its fleetkit.yaml (used when ``templates_dir`` is not set).
PROJECT_TEMPLATES = "templates"

_UNDEFINED_RE = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


def quote(value: Any) -> str:
    """A YAML/JSON double-quoted scalar: safe for any string, including secrets."""
    return json.dumps(value if isinstance(value, str) else str(value), ensure_ascii=False)


class Renderer:
    """Renders named templates with strict variables: the project's first, then fleetkit's."""

    def __init__(self, overrides: str | Path | None = None) -> None:
        self.overrides = Path(overrides) if overrides else None
        self.directories = [d for d in (self.overrides, BUILTIN_TEMPLATES) if d is not None]
        self._jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader([str(d) for d in self.directories]),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )
        self._jinja.filters["quote"] = quote
        self._jinja.filters["shquote"] = lambda value: shlex.quote(str(value))

    @classmethod
    def for_settings(cls, settings: Settings) -> Renderer:
        """The project's renderer: ``templates_dir``, else ``templates/`` beside the settings."""
        if settings.templates_dir:
            return cls(settings.templates_dir)
        project = Path(settings.base_dir) / PROJECT_TEMPLATES
        return cls(project if project.is_dir() else None)

    def path_of(self, name: str) -> str:
        """The file ``name`` is rendered from (the first directory that has it)."""
        for directory in self.directories:
            if (directory / name).is_file():
                return str(directory / name)
        return str(self.directories[0] / name)

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render ``name``; every template problem is bad input naming the template file."""
        file = self.path_of(name)
        try:
            return self._jinja.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            where = " or ".join(str(d) for d in self.directories)
            raise ConfigError(f"template not found (looked in {where})", file=file) from None
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
