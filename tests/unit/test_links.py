"""Share-link use cases (grantlink.links) against moto: lifecycle, tokens, expiry, tenancy, listing. The rows of
SECURITY.md they prove (T1–T3, T5, D2, M1 on links) are in tests/security."""

from __future__ import annotations

from typing import Any

import pytest

from grantlink import errors, links
from grantlink.models import Caller, CreateLinkRequest, LinkStatus
from tests.helpers import FrozenClock

A = Caller("tnt_a", frozenset({"links:write"}))
B = Caller("tnt_b", frozenset({"links:write"}))
DEMO_PARTNER = 9001


def create(caller: Caller = A, **fields: Any) -> tuple[links.ShareLink, str]:
    request = CreateLinkRequest(**{"partnerId": DEMO_PARTNER, "title": "CRM for ACME", **fields})
    return links.create_link(caller, request)


def test_create_returns_a_waiting_link_with_a_fresh_token(aws_env: Any, clock: FrozenClock) -> None:
    """Given a tenant, when it creates a link, then the link waits, expires in 48 h and carries a new token."""
    link, token = create()
    assert link.status == LinkStatus.WAITING
    assert link.expires_at - link.created_at == links.timedelta(hours=48)
    assert links.token_matches(token, link.token_hash)
    out = link.to_out(token, "https://connect.example.test")
    assert out.link == f"https://connect.example.test/connect?id={link.id}&token={token}"
    assert out.credentialId is None and out.expired is False


def test_a_shorter_lifetime_may_be_asked_for(aws_env: Any, clock: FrozenClock) -> None:
    """Given expiresInHours=2, the link expires two hours after creation."""
    link, _ = create(expiresInHours=2)
    assert link.expires_at - link.created_at == links.timedelta(hours=2)


def test_lifetime_can_be_configured_down_but_never_past_48h(
    aws_env: Any, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GRANTLINK_LINK_TTL_HOURS lowers the ceiling; a request for more gets the ceiling."""
    from grantlink import config

    monkeypatch.setenv("GRANTLINK_LINK_TTL_HOURS", "12")
    config.reset()
    link, _ = create(expiresInHours=40)
    assert link.expires_at - link.created_at == links.timedelta(hours=12)
    monkeypatch.setenv("GRANTLINK_LINK_TTL_HOURS", "49")
    config.reset()
    with pytest.raises(ValueError):
        config.settings()


def test_unknown_partner_is_refused(aws_env: Any, table_items: Any) -> None:
    """A link for a partner not in the catalogue is a 422 and writes nothing."""
    with pytest.raises(errors.UnprocessableEntity) as raised:
        create(partnerId=424242)
    assert raised.value.code == "unknown_partner"
    assert table_items() == []


def test_regenerate_issues_a_new_token_and_kills_the_old(aws_env: Any, clock: FrozenClock) -> None:
    """PUT: new token, status 0, a full new lifetime; the old token no longer matches."""
    link, old = create()
    clock.advance(hours=30)
    after, new = links.regenerate_link(A, link.id)
    assert new != old
    assert after.status == LinkStatus.WAITING
    assert after.expires_at == clock().replace(microsecond=0) + links.timedelta(hours=48)
    stored = links.get_link(A, link.id)
    assert links.token_matches(new, stored.token_hash)
    assert not links.token_matches(old, stored.token_hash)


def test_revoke_sets_status_3_and_kills_the_token(aws_env: Any) -> None:
    """DELETE: status 3; the stored hash is erased so no token matches; repeating it is harmless."""
    link, token = create()
    revoked = links.revoke_link(A, link.id)
    assert revoked.status == LinkStatus.REVOKED
    assert not links.token_matches(token, links.get_link(A, link.id).token_hash)
    assert links.revoke_link(A, link.id).status == LinkStatus.REVOKED


def test_a_revoked_link_cannot_be_regenerated(aws_env: Any) -> None:
    link, _ = create()
    links.revoke_link(A, link.id)
    with pytest.raises(errors.Conflict) as raised:
        links.regenerate_link(A, link.id)
    assert raised.value.code == "link_revoked"


def test_list_pages_newest_first_with_totals_and_cursor(aws_env: Any, clock: FrozenClock) -> None:
    """Seven links, three per page: pages 1..3, newest first, totals from the counters, no repeats."""
    created = []
    for _ in range(7):
        created.append(create()[0].id)
        clock.advance(seconds=1)
    seen, cursor, pages = [], None, []
    while True:
        page, meta = links.list_links(A, None, 3, cursor)
        seen += [link.id for link in page]
        pages.append(meta.page)
        assert (meta.totalItemsCount, meta.totalPages) == (7, 3)
        cursor = meta.nextCursor
        if not cursor:
            break
    assert seen == list(reversed(created))
    assert pages[:3] == [1, 2, 3]


def test_list_filters_by_status_with_its_own_totals(aws_env: Any) -> None:
    keep, _ = create()
    gone, _ = create()
    links.revoke_link(A, gone.id)
    waiting, meta = links.list_links(A, LinkStatus.WAITING, 20, None)
    assert [link.id for link in waiting] == [keep.id] and meta.totalItemsCount == 1
    revoked, meta = links.list_links(A, LinkStatus.REVOKED, 20, None)
    assert [link.id for link in revoked] == [gone.id] and meta.totalItemsCount == 1


def test_a_page_costs_one_query_not_a_scan(aws_env: Any) -> None:
    """Listing reads O(perPage) items through the tenant index: one Query, one counters read, no Scan."""
    import boto3

    for _ in range(5):
        create()
    calls: list[str] = []
    client = boto3.client("dynamodb")
    client.meta.events.register("before-call.dynamodb.*", lambda model, **_: calls.append(model.name))
    page, _ = links.list_links(A, None, 2, None, store=links.Store(client))
    assert len(page) == 2
    assert sorted(calls) == ["GetItem", "Query"]


@pytest.mark.parametrize("mutate", ["flip", "other_tenant", "other_filter", "garbage"])
def test_a_tampered_or_foreign_cursor_is_refused(aws_env: Any, mutate: str) -> None:
    for _ in range(3):
        create(A)
        create(B)
    _, meta = links.list_links(A, None, 1, None)
    cursor = meta.nextCursor
    assert cursor
    with pytest.raises(errors.BadRequest) as raised:
        if mutate == "flip":
            links.list_links(A, None, 1, ("A" if cursor[3] != "A" else "B").join([cursor[:3], cursor[4:]]))
        elif mutate == "other_tenant":
            links.list_links(B, None, 1, cursor)
        elif mutate == "other_filter":
            links.list_links(A, LinkStatus.WAITING, 1, cursor)
        else:
            links.list_links(A, None, 1, "not-a-cursor")
    assert raised.value.code == "invalid_cursor"


def test_concurrent_changes_do_not_overwrite_each_other(aws_env: Any) -> None:
    """A PUT computed from a stale read loses cleanly (409) instead of resurrecting a revoked link."""
    from grantlink.store import default

    link, _ = create()
    stale = links.get_link(A, link.id)
    links.revoke_link(A, link.id)
    fresh_state = links.replace(stale, status=LinkStatus.WAITING, version=stale.version + 1)
    with pytest.raises(errors.Conflict):
        links._write(default(), stale, fresh_state, None)
    assert links.get_link(A, link.id).status == LinkStatus.REVOKED


# --- totals count what the list returns, also after links are cleaned up -----------------------------------------


def _listed(status: LinkStatus | None = None) -> tuple[list[str], int]:
    """(the ids of every link listed, the totalItemsCount the list reports) for tenant A."""
    page, meta = links.list_links(A, status, 100, None)
    return [link.id for link in page], meta.totalItemsCount


def test_after_clean_up_the_list_and_its_totals_agree(aws_env: Any, clock: FrozenClock) -> None:
    """Given a link left to expire, a revoked link and a granted link,
    when their clean-up time (expiry + GRANTLINK_LINK_RETENTION_DAYS) passes and the jobs run,
    then the unused links are gone from the list and from every total, the granted link stays, and a link
    made meanwhile is listed and counted — whatever DynamoDB's TTL has or has not deleted yet."""
    from grantlink import connect
    from tests.helpers import SECRET, run_jobs

    create()  # left to expire
    revoked, _ = create()
    links.revoke_link(A, revoked.id)
    granted, token = create()
    connect.submit(granted.id, token, {"apiKey": SECRET})
    clock.advance(hours=49)
    run_jobs(aws_env)  # share.expired for the link left waiting
    clock.advance(days=30)
    fresh, _ = create()
    run_jobs(aws_env)
    assert _listed() == ([fresh.id, granted.id], 2)
    assert _listed(LinkStatus.WAITING) == ([fresh.id], 1)
    assert _listed(LinkStatus.GRANTED) == ([granted.id], 1)
    assert _listed(LinkStatus.REVOKED) == ([], 0)
    assert links.get_link(A, granted.id).credential_id


def test_nothing_is_cleaned_up_before_its_time(aws_env: Any, clock: FrozenClock) -> None:
    """Given an expired and a revoked link, when the jobs run a minute before their clean-up time, then both are
    still listed and counted (as expired and revoked)."""
    from tests.helpers import run_jobs

    expired, _ = create()
    clock.advance(seconds=1)  # listed newest first
    revoked, _ = create()
    links.revoke_link(A, revoked.id)
    clock.advance(hours=48)
    run_jobs(aws_env)
    clock.advance(days=30, minutes=-1, seconds=-2)
    run_jobs(aws_env)
    assert _listed() == ([revoked.id, expired.id], 2)
    assert links.get_link(A, expired.id).is_expired() and _listed(LinkStatus.REVOKED) == ([revoked.id], 1)


def test_dynamodb_ttl_is_only_a_backstop_after_the_application_s_own_clean_up(
    aws_env: Any, clock: FrozenClock, table_items: Any
) -> None:
    """Given a new link, then it is due for clean-up at expiry + retention, and DynamoDB's TTL is a week later,
    so TTL (which deletes without touching the counters) only acts if the jobs have not run for a week."""
    link, _ = create()
    links.revoke_link(A, link.id)
    item = next(i for i in table_items() if i["pk"]["S"] == f"SHARE#{link.id}")
    cleanup = link.expires_at + links.timedelta(days=30)
    assert item["cleanupAt"]["S"] == item["dueAt"]["S"] == links.clock.iso(cleanup)
    assert int(item["ttl"]["N"]) == int((cleanup + links.timedelta(days=7)).timestamp())


def test_a_link_regenerated_after_its_clean_up_was_queued_is_not_deleted(aws_env: Any, clock: FrozenClock) -> None:
    """Given an expired link whose clean-up message was queued (and read by a worker), when the tenant regenerates
    it before the delete, then nothing is deleted (the delete is conditional on the version the worker read) and the
    link is listed and counted as waiting."""
    from grantlink import renewal
    from grantlink.store import ConditionFailed, default
    from tests.helpers import queued, run_jobs, work

    link, _ = create()
    clock.advance(hours=48)
    run_jobs(aws_env)
    clock.advance(days=30)
    renewal.sweep()
    messages = queued(aws_env)
    stale = default().get_link(link.id)
    links.regenerate_link(A, link.id)
    assert stale is not None
    with pytest.raises(ConditionFailed):
        default().delete_link(stale)
    assert work(messages) == {"batchItemFailures": []}
    assert _listed(LinkStatus.WAITING) == ([link.id], 1) and _listed() == ([link.id], 1)
