"""The one Logger, Tracer and Metrics, plus redaction.

botocore and oauthlib log request and response bodies at DEBUG, which would carry tokens and keys:
they are pinned to WARNING whatever the service log level is. A logging filter masks anything that looks
like a grantlink API key or a bearer token, and any extra field whose name says it is secret.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = "grantlink"
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "oauthlib", "requests_oauthlib", "aws_encryption_sdk")
SECRET_FIELD = re.compile(r"(token|secret|password|verifier|apikey|api_key|authorization|code)$", re.I)
SECRET_TEXT = re.compile(r"(glk_[A-Za-z0-9_\-]{20,})|((?i:bearer)\s+[A-Za-z0-9._~+/\-=]{8,})")
MASK = "***"
# X-Ray traces the AWS calls from init. Not patch_all(), which imports and patches every library the SDK
# knows (requests, httplib, sqlite3, …) on each cold start, in functions that never use them: `requests` is
# patched by `trace_http()`, called where the partner-calling modules import it.
TRACED_MODULES = ("botocore",)


def redact_text(text: str) -> str:
    return SECRET_TEXT.sub(MASK, text)


def redact(value: Any, key: str = "") -> Any:
    """Return `value` with secret-looking fields and substrings masked (recursively)."""
    if key and SECRET_FIELD.search(key) and value not in (None, ""):
        return MASK
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if record.args:
            record.args = (
                tuple(redact(a) for a in record.args) if isinstance(record.args, tuple) else redact(record.args)
            )
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRS:
                setattr(record, name, redact(value, name))
        return True


_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def trace_http() -> None:
    """Trace partner HTTP calls (requests, and requests-oauthlib on top of it) in X-Ray, once per process.

    Not the X-Ray SDK's own requests patch: it stores a failed call's exception message in the trace, and requests
    writes the whole URL into a connection error's message, query string included - where a partner that takes
    its API key in the query (Pipedrive's `api_token`) has it. This one records the method, the URL without query
    or fragment, the status, and for a failure only the exception's type."""
    global _http_traced
    if not _http_traced and not tracer.disabled:
        import wrapt

        wrapt.wrap_function_wrapper("requests", "Session.request", _traced_request)
    _http_traced = True


_http_traced = False


def _traced_request(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    method, url = kwargs.get("method") or args[0], kwargs.get("url") or args[1]
    xray: Any
    parts, xray = urlsplit(str(url)), tracer.provider  # Any: Powertools' provider type has no begin_subsegment
    subsegment = xray.begin_subsegment(parts.hostname or "partner", "remote")
    if subsegment is None:  # no segment to hang it on (X-Ray's context-missing strategy decided)
        return wrapped(*args, **kwargs)
    subsegment.put_http_meta("method", str(method).upper())
    host = parts.netloc.rpartition("@")[2]  # no user:password@
    subsegment.put_http_meta("url", urlunsplit((parts.scheme, host, parts.path, "", "")))
    try:
        response = wrapped(*args, **kwargs)
        subsegment.put_http_meta("status", response.status_code)
        return response
    except Exception as exc:
        subsegment.add_fault_flag()
        subsegment.put_metadata("error", type(exc).__name__, SERVICE)  # never str(exc): it holds the URL
        raise
    finally:
        xray.end_subsegment()


def pin_noisy_loggers() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


logger = Logger(service=SERVICE)
logger.addFilter(RedactingFilter())
tracer = Tracer(service=SERVICE, patch_modules=TRACED_MODULES)
metrics = Metrics(namespace="grantlink", service=SERVICE)
pin_noisy_loggers()
