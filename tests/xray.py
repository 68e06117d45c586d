"""X-Ray as deployed, in process: what every traced handler would send to the X-Ray daemon, recorded.

In Lambda (`Tracing: Active`) the X-Ray SDK keeps a facade segment per invocation (from `_X_AMZN_TRACE_ID`),
Powertools streams each closed subsegment (`streaming_threshold=0`), botocore is patched and grantlink traces
partner calls itself (`observability.trace_http`), so every AWS call and every partner call becomes a
subsegment of its own. The tests run with tracing disabled (outside Lambda Powertools turns it off);
`recording_traces()` turns all of that on for the block, with an emitter that keeps each document instead of
sending it over UDP, and puts everything back afterwards (the patches too).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.client
import botocore.endpoint
import pytest
import requests
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import patch, patcher, xray_recorder
from aws_xray_sdk.core.lambda_launcher import LambdaContext
from aws_xray_sdk.core.streaming.default_streaming import DefaultStreaming

from grantlink import observability

TRACE_HEADER = "Root=1-6740a000-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1"


class RecordingEmitter:
    """Stands in for the UDP emitter: keeps the JSON document of every segment and subsegment sent."""

    def __init__(self) -> None:
        self.documents: list[str] = []

    def send_entity(self, entity: Any) -> None:
        self.documents.append(entity.serialize())

    def set_daemon_address(self, address: str | None) -> None:  # the recorder's configure() may call it
        pass


@contextmanager
def recording_traces() -> Iterator[list[str]]:
    """Tracing on, as in Lambda, inside the block; yields the list the trace documents land in (JSON text)."""
    emitter = RecordingEmitter()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("AWS_XRAY_SDK_ENABLED", raising=False)
        mp.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
        mp.setenv("_X_AMZN_TRACE_ID", TRACE_HEADER)
        mp.setenv("AWS_XRAY_CONTEXT_MISSING", "RUNTIME_ERROR")  # a subsegment without a segment must not pass
        _restore_patched_functions(mp)
        mp.setattr(patcher, "_PATCHED_MODULES", set())
        mp.setattr(xray_recorder, "_context", LambdaContext())
        mp.setattr(xray_recorder, "_emitter", emitter)
        mp.setattr(xray_recorder, "_streaming", DefaultStreaming(streaming_threshold=0))
        mp.setattr(observability.tracer, "disabled", False)
        mp.setattr(observability, "_http_traced", False)  # trace_http() patches requests again, as at a cold start
        was_enabled = global_sdk_config.sdk_enabled()
        had_flag = hasattr(botocore.client, "_xray_enabled")
        global_sdk_config.set_sdk_enabled(True)
        try:
            patch(list(observability.TRACED_MODULES))  # what the Tracer patches at init
            yield emitter.documents
        finally:
            global_sdk_config.set_sdk_enabled(was_enabled)
            if not had_flag and hasattr(botocore.client, "_xray_enabled"):
                delattr(botocore.client, "_xray_enabled")


def _restore_patched_functions(mp: pytest.MonkeyPatch) -> None:
    """Note the functions the X-Ray patches replace, so that leaving the block restores them."""
    for owner, name in (
        (botocore.client.BaseClient, "_make_api_call"),
        (botocore.endpoint.Endpoint, "prepare_request"),
        (requests.Session, "request"),
        (requests.Session, "prepare_request"),
    ):
        mp.setattr(owner, name, owner.__dict__[name])
