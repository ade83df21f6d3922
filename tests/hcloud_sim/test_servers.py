"""Server endpoints of hcloud-sim driven through the hcloud SDK: create, read, list, update, delete."""

from __future__ import annotations

import pytest
from hcloud import APIException, Client
from hcloud.images import Image
from hcloud.locations import Location
from hcloud.server_types import ServerType

from .support import RunningSimulator, create_running_server, create_server, public_ip


def test_create_response_has_sdk_shape(client: Client) -> None:
    response = client.servers.create(
        name="ws-shape", server_type=ServerType(name="cx22"), image=Image(name="debian-12")
    )

    assert response.server.status == "initializing"
    assert response.action.command == "create_server"
    assert response.action.status == "running"
    assert [action.command for action in response.next_actions] == ["start_server"]
    assert isinstance(response.root_password, str)
    assert public_ip(response.server).startswith("127.")
    assert "/" in response.server.public_net.ipv6.ip


def test_create_raw_response_keys(sim: RunningSimulator) -> None:
    body = {"name": "ws-raw", "server_type": "cpx11", "image": "ubuntu-24.04", "location": "hel1"}

    response = sim.api("POST", "/servers", json=body)

    assert response.status_code == 201
    assert set(response.json()) == {"server", "action", "next_actions", "root_password"}
    public_net = response.json()["server"]["public_net"]
    assert set(public_net) >= {"ipv4", "ipv6", "floating_ips"}
    assert set(public_net["ipv4"]) >= {"id", "ip", "blocked", "dns_ptr"}
    assert set(public_net["ipv6"]) >= {"id", "ip", "blocked", "dns_ptr"}


def test_server_becomes_running(client: Client) -> None:
    server = create_running_server(client, "ws-run", location=Location(name="nbg1"))

    assert server.status == "running"
    assert server.location.name == "nbg1"
    assert server.server_type.name == "cx22"


def test_no_start_after_create_ends_off(client: Client) -> None:
    response = client.servers.create(
        name="ws-off", server_type=ServerType(name="cax11"), image=Image(name="debian-12"),
        start_after_create=False,
    )

    response.action.wait_until_finished()

    assert response.next_actions == []
    assert client.servers.get_by_id(response.server.id).status == "off"


def test_ssh_keys_suppress_root_password(sim: RunningSimulator) -> None:
    body = {"name": "ws-key", "server_type": "cx22", "image": "debian-12", "ssh_keys": ["my-key"]}

    response = sim.api("POST", "/servers", json=body)

    assert response.status_code == 201
    assert response.json()["root_password"] is None


@pytest.mark.parametrize("name", ["bad_name", "has space", "-leading", "trailing-", "a" * 64, ""])
def test_invalid_name_is_rejected(client: Client, name: str) -> None:
    with pytest.raises(APIException) as caught:
        create_server(client, name)

    assert caught.value.code == "invalid_input"
    assert caught.value.message == "invalid input in field 'name'"
    assert caught.value.details["fields"][0]["name"] == "name"


def test_duplicate_name_is_rejected(client: Client) -> None:
    create_server(client, "ws-dup", start_after_create=False)

    with pytest.raises(APIException) as caught:
        create_server(client, "ws-dup")

    assert caught.value.code == "uniqueness_error"
    assert caught.value.message == "server name is already used"


@pytest.mark.parametrize(
    ("field", "value"),
    [("image", "windows-95"), ("server_type", "cx999"), ("location", "mars1")],
)
def test_unknown_catalogue_entry_is_rejected(sim: RunningSimulator, field: str, value: str) -> None:
    body = {"name": "ws-cat", "server_type": "cx22", "image": "debian-12", field: value}

    response = sim.api("POST", "/servers", json=body)

    assert response.status_code == 422
    assert response.json()["error"] == {"code": "invalid_input", "message": f"{field} not found", "details": {}}


@pytest.mark.parametrize(
    "labels",
    [{"bad key!": "x"}, {"key": "bad value!"}, {"hetzner.cloud/x": "y"}, {"key": "v" * 64}],
)
def test_invalid_labels_are_rejected(client: Client, labels: dict[str, str]) -> None:
    with pytest.raises(APIException) as caught:
        create_server(client, "ws-labels", labels=labels)

    assert caught.value.code == "invalid_input"
    assert caught.value.details["fields"][0]["name"] == "labels"


def test_valid_labels_are_accepted(client: Client) -> None:
    labels = {"example.com/owner": "team-a", "empty": "", "a": "b.c_d-e"}

    server = create_server(client, "ws-good-labels", labels=labels, start_after_create=False)

    assert server.labels == labels


def test_oversized_user_data_is_rejected(client: Client) -> None:
    with pytest.raises(APIException) as caught:
        create_server(client, "ws-big", user_data="#" * (32 * 1024 + 1))

    assert caught.value.code == "invalid_input"
    assert caught.value.details["fields"][0]["name"] == "user_data"


def test_malformed_json_gets_json_error(sim: RunningSimulator) -> None:
    response = sim.api("POST", "/servers", content=b"{not json", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "json_error"
    assert "details" in response.json()["error"]


def test_missing_token_gets_unauthorized(sim: RunningSimulator) -> None:
    response = sim.api("GET", "/servers", token=None)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_unknown_server_is_not_found(client: Client) -> None:
    with pytest.raises(APIException) as caught:
        client.servers.get_by_id(999999)

    assert caught.value.code == "not_found"


def test_unknown_action_is_not_found(sim: RunningSimulator) -> None:
    response = sim.api("GET", "/actions/999999")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_unknown_path_and_wrong_method(sim: RunningSimulator) -> None:
    unknown = sim.api("GET", "/volumes")
    wrong_method = sim.api("PATCH", "/servers")

    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_delete_method_on_collection_not_allowed(sim: RunningSimulator) -> None:
    response = sim.api("DELETE", "/servers")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_update_renames_and_relabels(client: Client) -> None:
    server = create_server(client, "ws-old", labels={"a": "1"}, start_after_create=False)

    updated = client.servers.update(server, name="ws-new", labels={"b": "2"})

    assert updated.name == "ws-new"
    assert updated.labels == {"b": "2"}
    assert client.servers.get_by_name("ws-old") is None


def test_update_to_taken_name_is_rejected(client: Client) -> None:
    create_server(client, "ws-taken", start_after_create=False)
    other = create_server(client, "ws-other", start_after_create=False)

    with pytest.raises(APIException) as caught:
        client.servers.update(other, name="ws-taken")

    assert caught.value.code == "uniqueness_error"


def test_get_by_name_matches_exactly(client: Client) -> None:
    create_server(client, "ws-a", start_after_create=False)
    create_server(client, "ws-ab", start_after_create=False)

    found = client.servers.get_by_name("ws-a")

    assert found is not None
    assert found.name == "ws-a"
    assert client.servers.get_by_name("ws") is None


LABELLED = {
    "s-web-prod": {"role": "web", "env": "prod"},
    "s-web-dev": {"role": "web", "env": "dev"},
    "s-db-prod": {"role": "db", "env": "prod", "backup": "yes"},
    "s-bare": {},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("role=web", {"s-web-prod", "s-web-dev"}),
        ("role==web", {"s-web-prod", "s-web-dev"}),
        ("role!=web", {"s-db-prod", "s-bare"}),
        ("backup", {"s-db-prod"}),
        ("!backup", {"s-web-prod", "s-web-dev", "s-bare"}),
        ("env in (prod,staging)", {"s-web-prod", "s-db-prod"}),
        ("env notin (prod)", {"s-web-dev", "s-bare"}),
        ("role=web,env=prod", {"s-web-prod"}),
        ("role in (web,db),env notin (dev),!backup", {"s-web-prod"}),
    ],
)
def test_label_selector_filters(client: Client, selector: str, expected: set[str]) -> None:
    for name, labels in LABELLED.items():
        create_server(client, name, labels=labels, start_after_create=False)

    servers = client.servers.get_all(label_selector=selector)

    assert {server.name for server in servers} == expected


def test_invalid_label_selector_is_rejected(sim: RunningSimulator) -> None:
    response = sim.api("GET", "/servers", params={"label_selector": "bad key!=x"})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_pagination_across_many_servers(client: Client, sim: RunningSimulator) -> None:
    for index in range(55):
        create_server(client, f"page-{index:02d}", labels={"batch": "p"}, start_after_create=False)

    everything = client.servers.get_all(label_selector="batch=p")
    second = sim.api("GET", "/servers", params={"page": 2, "per_page": 50}).json()
    first = sim.api("GET", "/servers", params={"per_page": 50}).json()

    assert len(everything) == 55
    assert len({server.id for server in everything}) == 55
    assert first["meta"]["pagination"] == {
        "page": 1, "per_page": 50, "previous_page": None, "next_page": 2, "last_page": 2, "total_entries": 55,
    }
    assert second["meta"]["pagination"] == {
        "page": 2, "per_page": 50, "previous_page": 1, "next_page": None, "last_page": 2, "total_entries": 55,
    }
    assert len(second["servers"]) == 5


def test_per_page_is_capped_at_fifty(sim: RunningSimulator, client: Client) -> None:
    for index in range(3):
        create_server(client, f"cap-{index}", start_after_create=False)

    response = sim.api("GET", "/servers", params={"per_page": 500})

    assert response.json()["meta"]["pagination"]["per_page"] == 50


def test_invalid_page_is_rejected(sim: RunningSimulator) -> None:
    response = sim.api("GET", "/servers", params={"page": "0"})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_empty_list_has_one_page(sim: RunningSimulator) -> None:
    response = sim.api("GET", "/servers")

    assert response.json() == {
        "servers": [],
        "meta": {"pagination": {
            "page": 1, "per_page": 25, "previous_page": None, "next_page": None, "last_page": 1, "total_entries": 0,
        }},
    }


def test_sort_by_name_descending(client: Client, sim: RunningSimulator) -> None:
    for name in ("b-srv", "c-srv", "a-srv"):
        create_server(client, name, start_after_create=False)

    response = sim.api("GET", "/servers", params={"sort": "name:desc"})

    assert [server["name"] for server in response.json()["servers"]] == ["c-srv", "b-srv", "a-srv"]


def test_status_filter(client: Client) -> None:
    off = client.servers.create(
        name="st-off", server_type=ServerType(name="cx22"), image=Image(name="debian-12"), start_after_create=False
    )
    off.action.wait_until_finished()
    create_running_server(client, "st-on")

    running = client.servers.get_all(status=["running"])
    stopped = client.servers.get_all(status=["off"])

    assert [server.name for server in running] == ["st-on"]
    assert [server.name for server in stopped] == ["st-off"]


def test_delete_removes_server(client: Client) -> None:
    server = create_running_server(client, "ws-del")

    action = client.servers.delete(server)
    action.wait_until_finished()

    assert action.command == "delete_server"
    assert client.actions.get_by_id(action.id).status == "success"
    with pytest.raises(APIException) as caught:
        client.servers.get_by_id(server.id)
    assert caught.value.code == "not_found"


def test_power_off_and_on(client: Client) -> None:
    server = create_running_server(client, "ws-power")

    client.servers.power_off(server).wait_until_finished()
    stopped = client.servers.get_by_id(server.id).status
    client.servers.power_on(server).wait_until_finished()
    started = client.servers.get_by_id(server.id).status

    assert stopped == "off"
    assert started == "running"


@pytest.mark.parametrize("method", ["reboot", "reset", "shutdown"])
def test_other_power_actions_finish(client: Client, method: str) -> None:
    server = create_running_server(client, f"ws-{method}")

    action = getattr(client.servers, method)(server)
    action.wait_until_finished()

    assert client.actions.get_by_id(action.id).status == "success"


def test_power_action_during_create_is_locked(client: Client) -> None:
    server = create_server(client, "ws-busy")

    with pytest.raises(APIException) as caught:
        client.servers.power_off(server)

    assert caught.value.code == "locked"


def test_server_actions_are_listed(client: Client) -> None:
    server = create_running_server(client, "ws-actions")

    actions = client.servers.get_actions_list(server).actions
    by_id = client.servers.actions.get_by_id(actions[0].id)

    assert [action.command for action in actions] == ["create_server", "start_server"]
    assert {action.status for action in actions} == {"success"}
    assert by_id.command == "create_server"
