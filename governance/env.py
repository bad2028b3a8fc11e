"""Environment helpers that fail closed.

Every value the deployment controls comes through here, so a malformed value
raises ImproperlyConfigured at start-up instead of silently falling back to a
permissive default.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

env = environ.Env()

# Source database aliases become Django DATABASES keys and appear in archive
# namespaces; keep them to plain identifiers.
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool = False) -> bool:
    raw = env.str(name, default=None)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true or false)")


def env_int(name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = env.str(name, default=None)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {maximum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = env.str(name, default=None)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def source_aliases(default: list[str]) -> list[str]:
    aliases = env_list("SOURCE_DATABASES", default)
    for alias in aliases:
        if not ALIAS_RE.match(alias):
            raise ImproperlyConfigured(
                f"SOURCE_DATABASES entry {alias!r} is not a plain identifier "
                "(letters, digits and underscores, starting with a letter)"
            )
    if len(set(a.lower() for a in aliases)) != len(aliases):
        raise ImproperlyConfigured("SOURCE_DATABASES lists the same alias twice")
    reserved = {"default", "archive", "archive_readonly"}
    clash = reserved.intersection(a.lower() for a in aliases)
    if clash:
        raise ImproperlyConfigured(f"SOURCE_DATABASES may not use reserved alias {sorted(clash)}")
    return aliases


def database_from_url(name: str, default_url: str) -> dict:
    """Parse one DATABASES entry from an environment URL.

    django-environ (not dj-database-url) because it maps ``mssql://`` to the
    mssql-django backend.
    """
    url = env.str(name, default=default_url)
    try:
        config = env.db_url_config(url)
    except Exception as exc:  # environ raises several types for bad URLs
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"{name}: unsupported database scheme in {url!r}")
    return config


def secret_key(data_dir: Path, allow_generated: bool) -> str:
    """SECRET_KEY from the environment; the local demo may generate one.

    Generated keys are written to the data folder (git-ignored) so sessions
    survive restarts; production must set SECRET_KEY explicitly.
    """
    key = env.str("SECRET_KEY", default="")
    if key:
        if len(key) < 32:
            raise ImproperlyConfigured("SECRET_KEY must be at least 32 characters")
        return key
    if not allow_generated:
        raise ImproperlyConfigured("SECRET_KEY is not set (required outside local mode)")
    path = data_dir / "secret_key.txt"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key
