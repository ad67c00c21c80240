"""Fair queuing across keys: weights through the admin API, and the order jobs start in when they wait."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Cluster, assert_openai_error, start_cluster

MASTER = "sk-master-fair-test"
MODEL = "decopy-deepseek-v3"


@pytest.fixture(scope="module")
def admin_cluster() -> Iterator[Cluster]:
    c = start_cluster({"API_MASTER_KEY": MASTER}, apis=1, workers=1)
    yield c
    c.stop()


def _weights(admin: httpx.Client) -> dict[str, Any]:
    resp = admin.get("/admin/weights")
    assert resp.status_code == 200, resp.text
    return {w["key_id"]: w for w in resp.json()["data"]}


def test_weights_through_the_admin_api(admin_cluster: Cluster) -> None:
    with admin_cluster.admin() as admin:
        key = admin.post("/admin/keys", json={"name": "heavy"}).json()
        listed = _weights(admin)
        assert listed["master"]["weight"] == 1 and listed["dashboard"]["weight"] == 1
        assert listed[key["id"]] == {"key_id": key["id"], "name": "heavy", "weight": 1}
        assert admin.put(f"/admin/weights/{key['id']}", json={"weight": 3}).json() == {"key_id": key["id"], "weight": 3}
        assert admin.put("/admin/weights/dashboard", json={"weight": 0.5}).status_code == 200
        listed = _weights(admin)
        assert listed[key["id"]]["weight"] == 3 and listed["dashboard"]["weight"] == 0.5
        for bad in ({"weight": 0}, {"weight": -1}, {"weight": 1001}, {"weight": "3"}, {"weight": True}, {}, [3]):
            assert_openai_error(admin.put(f"/admin/weights/{key['id']}", json=bad), 400, "invalid_value")
        assert_openai_error(admin.put("/admin/weights/key_nope", json={"weight": 2}), 404, "key_not_found")
        assert admin.delete("/admin/weights/dashboard").json()["weight"] == 1
        assert _weights(admin)["dashboard"]["weight"] == 1
        # A revoked key's weight goes with it.
        assert admin.delete(f"/admin/keys/{key['id']}").status_code == 200
        assert key["id"] not in _weights(admin)
        other = admin.post("/admin/keys", json={"name": "light"}).json()
    with admin_cluster.http(0, other["key"]) as team:  # a team key cannot change the shares
        assert_openai_error(team.get("/admin/weights"), 401)
        assert_openai_error(team.put(f"/admin/weights/{other['id']}", json={"weight": 100}), 401)
