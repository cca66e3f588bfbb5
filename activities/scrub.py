"""Secrets on the worker: which ones it holds, which flows may reference, and the one redaction step.

Secrets come only from the worker's environment. A flow names one as `${env:NAME}` (an `http`
agent's or tool's header), and the worker fills it in only when NAME is on its allow-list
(`ENSEMBLE_ENV_ALLOW=NAME,NAME` or `python worker.py --env-allow NAME,NAME`); any other name is
refused, non-retryably, before a request is made.

`scrub()` is the one redaction step every error message, error detail and logged value passes
before it leaves an activity (and before it is cut short, so a key straddling a cut cannot leak as
a prefix). It knows:
- the values the worker holds: every allow-listed variable, the model providers' keys, and every
  credential-like variable (`*_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, ...);
- common token shapes: `Bearer ...`, `sk-...`, JWTs, AWS access key ids, GitHub and Slack tokens,
  and `key=value` pairs whose key names a credential.
A run never carries a secret value in; at worst a service echoes one back, and that is what this
catches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from temporalio.exceptions import ApplicationError

REDACTED = "[redacted]"
ENV_ALLOW = "ENSEMBLE_ENV_ALLOW"
ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
MIN_SECRET = 6  # shorter values are not treated as secrets (they would redact ordinary words)
MIN_FRAGMENT = 8  # a cut-off piece of a secret this long or longer is redacted too

PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY", "OLLAMA_API_KEY", "TEMPORAL_API_KEY")
_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)
_NOT_SECRET_ENV = re.compile(r"^(PATH|PWD|HOME|.*_(PATH|DIR|FILE|HOST|PORT|ADDRESS|URL|ENDPOINT|NAME))$", re.I)
_LIST_ENV = ("ENSEMBLE_CODEC_KEYS",)  # `kid:secret,kid:secret`: each secret counts on its own

_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{REDACTED}"),
    (
        re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)((?:basic|bearer|token|digest)\s+)?[^\s\"',;]{6,}"),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{12,}"), REDACTED),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*"), REDACTED),
    (re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,})"), REDACTED),
    (
        re.compile(
            r"(?i)((?:api[_-]?key|secret|token|password|passwd|access[_-]?key|private[_-]?key|client[_-]?secret|credential)s?"
            r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&}]{6,})"
        ),
        rf"\1{REDACTED}",
    ),
)

# One pass that finds whether any shape may be present, before the substitutions run one by one
# (most logged strings hold none): the same patterns, their case-insensitivity scoped to each.
_ANY_SHAPE = re.compile(
    "|".join(f"(?i:{p.pattern[4:]})" if p.pattern.startswith("(?i)") else f"(?:{p.pattern})" for p, _ in _SHAPES)
)
_SHORTEST = min(MIN_SECRET, 8)  # no secret value and no token shape fits in fewer characters


def env_allowed() -> frozenset[str]:
    """The environment variables flows may reference on this worker."""
    return frozenset(n.strip() for n in os.environ.get(ENV_ALLOW, "").split(",") if n.strip())


def _env_secrets() -> frozenset[str]:
    allowed = env_allowed()
    values: set[str] = set()
    for name, value in os.environ.items():
        if name in allowed or name in PROVIDER_KEYS or (_SECRET_ENV.search(name) and not _NOT_SECRET_ENV.match(name)):
            values.add(value.strip())
        if name in _LIST_ENV:
            values.update(item.partition(":")[2].strip() for item in value.split(","))
    return frozenset(values)


# Every log line and error passes scrub(), once per string field: the environment is read again only
# when it has changed (compared as the process's raw environment, without decoding a value).
_held: tuple[dict[Any, Any] | None, frozenset[str], list[str]] | None = None


def _secrets_held() -> tuple[frozenset[str], list[str]]:
    global _held
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict) or _held is None or _held[0] != raw:
        found = _env_secrets()
        snapshot = dict(raw) if isinstance(raw, dict) else None
        _held = (snapshot, found, sorted((v for v in found if len(v) >= MIN_SECRET), key=len, reverse=True))
    return _held[1], _held[2]


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """Every secret value this worker holds, longest first."""
    found, ordered = _secrets_held()
    more = {v for v in extra if v and len(v) >= MIN_SECRET and v not in found}
    if not more:
        return list(ordered)
    return sorted((*ordered, *more), key=len, reverse=True)


_TOKEN_CHAR = re.compile(r"[A-Za-z0-9_\-./+=:]")


def _fragments(text: str, secret: str) -> str:
    """Redact a piece of `secret` a cut left behind: a run of 8+ of its first characters that
    ends the text or a token (a key cut at the end), or of its last characters that starts one."""
    n = MIN_FRAGMENT
    if len(secret) <= n:
        return text
    start = text.find(secret[:n])
    while start != -1:
        end = start + n
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        if end == len(text) or not _TOKEN_CHAR.match(text[end]):
            text = text[:start] + REDACTED + text[end:]
            end = start + len(REDACTED)
        start = text.find(secret[:n], end)
    start = text.find(secret[-n:])
    while start != -1:
        begin, offset = start, len(secret) - n
        while begin > 0 and offset > 0 and text[begin - 1] == secret[offset - 1]:
            begin, offset = begin - 1, offset - 1
        end = start + n
        if begin == 0 or not _TOKEN_CHAR.match(text[begin - 1]):
            text = text[:begin] + REDACTED + text[end:]
            end = begin + len(REDACTED)
        start = text.find(secret[-n:], end)
    return text


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every secret the worker holds (and `extra` values) and every token shape
    replaced by `[redacted]`. Apply it before cutting text short."""
    if len(text) < _SHORTEST:
        return text
    for secret in secret_values(extra):
        if secret in text:
            text = text.replace(secret, REDACTED)
        text = _fragments(text, secret)
    if _ANY_SHAPE.search(text):
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
    return text


def clip(text: str, limit: int, extra: Iterable[str] = ()) -> str:
    """Scrubbed first, then cut to `limit` characters (stripped)."""
    return scrub(text, extra)[:limit].strip()


def scrub_value(value: Any, extra: Iterable[str] = ()) -> Any:
    """Strings inside dicts, lists and tuples scrubbed; anything else as it is."""
    if isinstance(value, str):
        return scrub(value, extra)
    if isinstance(value, dict):
        return {k: scrub_value(v, extra) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_value(v, extra) for v in value]
    return value


def scrubbed_error(err: BaseException) -> ApplicationError:
    """The failure an activity reports for `err`: the same type and retry behaviour, its message
    and details scrubbed, and no cause chain (a cause's message would travel unscrubbed)."""
    if isinstance(err, ApplicationError):
        details = [scrub_value(d) for d in err.details]
        return ApplicationError(
            scrub(err.message),
            *details,
            type=err.type,
            non_retryable=err.non_retryable,
            next_retry_delay=err.next_retry_delay,
            category=err.category,
        )
    return ApplicationError(scrub(str(err) or type(err).__name__), type=type(err).__name__)


def resolve_env_refs(text: str, who: str) -> str:
    """`text` with each `${env:NAME}` replaced by the worker's value; NAME must be allow-listed."""

    def env(match: re.Match[str]) -> str:
        name = match.group(1)
        allowed = env_allowed()
        if name not in allowed:
            what = f"{ENV_ALLOW} allows only {', '.join(sorted(allowed))}" if allowed else f"{ENV_ALLOW} is not set"
            raise ApplicationError(
                f"{who}: ${{env:{name}}} is not on this worker's allow-list ({what}); start the worker with "
                f"--env-allow {name} (or {ENV_ALLOW}={name}) if the flow may use it",
                type="EnvNotAllowed",
                non_retryable=True,
            )
        if name not in os.environ:
            raise ApplicationError(
                f"{who}: the worker's environment has no {name}", type="MissingSecret", non_retryable=True
            )
        return os.environ[name]

    return ENV_REF.sub(env, text)
