"""Fencing, leases and atomic commits of `workflows.store` against a real Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import unique_id
from workflows.errors import InvalidRequest, ProvisionNotFound
from workflows.model import ProvisionRequest, Status, Step, WorkspaceType
from workflows.store import Store


def _create(store: Store, secrets: dict[str, str] | None = None) -> str:
    provision_id = unique_id("store")
    store.create(ProvisionRequest(id=provision_id, type=WorkspaceType.LOCAL), secrets or {}, {"event": "workspace.provision_requested"})
    return provision_id


def test_create_rejects_taken_id(store: Store) -> None:
    provision_id = _create(store)

    with pytest.raises(InvalidRequest) as raised:
        store.create(ProvisionRequest(id=provision_id, type=WorkspaceType.LOCAL), {}, {"event": "x"})

    assert str(raised.value).startswith(f"provision {provision_id!r} already exists (status pending)")


def test_secrets_live_apart_from_record(store: Store) -> None:
    provision_id = _create(store, {"TOKEN": "hunter2"})

    assert store.get_secrets(provision_id) == {"TOKEN": "hunter2"}
    assert "hunter2" not in str(store.client.hgetall(store.record_key(provision_id)))
    assert 0 < store.client.ttl(store.secrets_key(provision_id)) <= 7 * 24 * 3600


def test_commit_with_stale_fence_changes_nothing(store: Store) -> None:
    provision_id = _create(store)
    assert store.commit(provision_id, 0, {"step": Step.HAND_OFF}, {"event": "first"}) == 1

    result = store.commit(provision_id, 0, {"step": Step.CREATE}, {"event": "late copy"})

    assert result is None
    assert store.get(provision_id).step is Step.HAND_OFF
    assert [fields["event"] for _entry, fields in store.events(provision_id)] == ["workspace.provision_requested", "first"]


def test_concurrent_commits_one_wins(store: Store) -> None:
    provision_id = _create(store)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: store.commit(provision_id, 0, {"last_error": str(n)}), range(8)))

    assert sum(result is not None for result in results) == 1
    assert store.get(provision_id).fence == 1


def test_lease_keeps_second_copy_out(store: Store) -> None:
    provision_id = _create(store)

    first = store.begin_step(provision_id, Step.CREATE, 0, "token-a", 5)
    second = store.begin_step(provision_id, Step.CREATE, 0, "token-b", 5)

    assert first.outcome == "ok"
    assert second.outcome == "leased"
    assert 0 < second.value <= 5000


def test_commit_needs_the_lease_it_names(store: Store) -> None:
    provision_id = _create(store)
    store.begin_step(provision_id, Step.CREATE, 0, "token-a", 5)

    assert store.commit(provision_id, 0, {"status": Status.PROVISIONING}, lease_token="token-b") is None
    assert store.commit(provision_id, 0, {"status": Status.PROVISIONING}, lease_token="token-a", release=True) == 1
    assert store.lease_holder(provision_id) is None


def test_begin_step_drops_wrong_step_or_fence(store: Store) -> None:
    provision_id = _create(store)

    assert store.begin_step(provision_id, Step.HAND_OFF, 0, "t", 5).outcome == "stale"
    assert store.begin_step(provision_id, Step.CREATE, 7, "t", 5).outcome == "stale"
    assert store.begin_step("no-such-provision", Step.CREATE, 0, "t", 5).outcome == "missing"


def test_begin_step_counts_starts(store: Store) -> None:
    provision_id = _create(store)

    for expected in (1, 2, 3):
        result = store.begin_step(provision_id, Step.CREATE, 0, f"t{expected}", 5)
        store.release_lease(provision_id, f"t{expected}")
        assert result.value == expected


def test_done_step_leaves_active_set(store: Store) -> None:
    provision_id = _create(store)
    assert provision_id in store.active_ids()

    store.commit(provision_id, 0, {"step": Step.DONE})

    assert provision_id not in store.active_ids()


def test_missing_record_raises_not_found(store: Store) -> None:
    with pytest.raises(ProvisionNotFound) as raised:
        store.get("nope-" + unique_id())

    assert str(raised.value).startswith("provision 'nope-")
