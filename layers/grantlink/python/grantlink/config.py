"""Settings from environment variables, read lazily into one pydantic model.

Nothing reads `os.environ` at import time: `settings()` builds the model on first use and caches it;
tests call `reset()` after changing the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache

from pydantic import BaseModel, Field

MAX_LINK_TTL_HOURS = 48


class Settings(BaseModel):
    table_name: str = Field(alias="GRANTLINK_TABLE")
    idempotency_table: str = Field("", alias="GRANTLINK_IDEMPOTENCY_TABLE")
    kms_key_id: str = Field("", alias="GRANTLINK_KMS_KEY_ID")
    cursor_secret_arn: str = Field("", alias="GRANTLINK_CURSOR_SECRET_ARN")
    connect_base_url: str = Field("", alias="GRANTLINK_CONNECT_BASE_URL")
    aws_region: str = Field("us-east-1", alias="AWS_REGION")
    link_ttl_hours: int = Field(MAX_LINK_TTL_HOURS, ge=1, le=MAX_LINK_TTL_HOURS, alias="GRANTLINK_LINK_TTL_HOURS")
    link_retention_days: int = Field(30, ge=1, alias="GRANTLINK_LINK_RETENTION_DAYS")
    link_max_failed_tests: int = Field(10, ge=1, le=1000, alias="GRANTLINK_LINK_MAX_FAILED_TESTS")
    audit_retention_days: int = Field(365, ge=1, alias="GRANTLINK_AUDIT_RETENTION_DAYS")
    idempotency_ttl_seconds: int = Field(3600, ge=60, alias="GRANTLINK_IDEMPOTENCY_TTL_SECONDS")
    max_body_bytes: int = Field(64 * 1024, ge=1024, alias="GRANTLINK_MAX_BODY_BYTES")
    oauth_redirect_uri: str = Field("", alias="GRANTLINK_OAUTH_REDIRECT_URI")
    default_oauth_apps_secret: str = Field("", alias="GRANTLINK_DEFAULT_OAUTH_APPS_SECRET")
    oauth_flow_ttl_seconds: int = Field(600, ge=60, le=3600, alias="GRANTLINK_OAUTH_FLOW_TTL_SECONDS")
    renew_before_seconds: int = Field(900, ge=0, alias="GRANTLINK_RENEW_BEFORE_SECONDS")
    test_connect_timeout: float = Field(3.0, gt=0, le=30, alias="GRANTLINK_TEST_CONNECT_TIMEOUT")
    test_read_timeout: float = Field(10.0, gt=0, le=60, alias="GRANTLINK_TEST_READ_TIMEOUT")
    allow_private_targets: bool = Field(False, alias="GRANTLINK_ALLOW_PRIVATE_TARGETS")
    # A PEM CA bundle for every partner call (grantlink.outbound); unset: REQUESTS_CA_BUNDLE, then the bundled CAs.
    ca_bundle: str = Field("", alias="GRANTLINK_CA_BUNDLE")
    requests_ca_bundle: str = Field("", alias="REQUESTS_CA_BUNDLE")
    # Overall deadline of one OAuth token/refresh call; the refresh lease must outlast it (grantlink.oauth).
    token_deadline_seconds: float = Field(12.0, gt=0, le=25, alias="GRANTLINK_TOKEN_DEADLINE_SECONDS")
    # Overall deadline of one proxied call (grantlink.proxy), refresh and retries included: the refresh's token
    # call, then the partner's answer get what is left. Must stay inside the proxy function's timeout.
    proxy_deadline_seconds: float = Field(25.0, gt=0, le=28, alias="GRANTLINK_PROXY_DEADLINE_SECONDS")
    renewal_queue_url: str = Field("", alias="GRANTLINK_RENEWAL_QUEUE_URL")
    webhook_queue_url: str = Field("", alias="GRANTLINK_WEBHOOK_QUEUE_URL")  # a manual retry is queued here
    webhook_dlq_url: str = Field("", alias="GRANTLINK_WEBHOOK_DLQ_URL")  # events whose delivery schedule ran out
    api_url: str = Field("", alias="GRANTLINK_API_URL")
    due_shards: int = Field(4, ge=1, le=64, alias="GRANTLINK_DUE_SHARDS")
    sweep_window_seconds: int = Field(300, ge=0, alias="GRANTLINK_SWEEP_WINDOW_SECONDS")
    warn_before_seconds: int = Field(259200, ge=0, alias="GRANTLINK_WARN_BEFORE_SECONDS")
    refresh_give_up_seconds: int = Field(86400, ge=60, alias="GRANTLINK_REFRESH_GIVE_UP_SECONDS")
    event_bus: str = Field("default", alias="GRANTLINK_EVENT_BUS")
    extra_providers: str = Field("", alias="GRANTLINK_EXTRA_PROVIDERS")
    local_demo: bool = Field(False, alias="GRANTLINK_LOCAL_DEMO")
    demo_base_url: str = Field("", alias="GRANTLINK_DEMO_BASE_URL")
    demo_oauth_url: str = Field("", alias="GRANTLINK_DEMO_OAUTH_URL")
    demo_oauth1_url: str = Field("", alias="GRANTLINK_DEMO_OAUTH1_URL")
    demo_sandbox_oauth_url: str = Field("", alias="GRANTLINK_DEMO_SANDBOX_OAUTH_URL")

    model_config = {"populate_by_name": True, "extra": "ignore"}


_OTHER_ENV = frozenset({"AWS_REGION", "REQUESTS_CA_BUNDLE"})


@lru_cache(maxsize=1)
def settings() -> Settings:
    env = {k: v for k, v in os.environ.items() if k.startswith("GRANTLINK_") or k in _OTHER_ENV}
    return Settings.model_validate(env)


def reset() -> None:
    settings.cache_clear()
