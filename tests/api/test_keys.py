"""API keys: when auth is on, 401 for no key or a wrong or revoked one, 403 for a missing scope, the open
routes, the per-key submission rate, and the starts that are refused without a key (SQLite and Postgres)."""

from __future__ import annotations

import pytest

from api.auth import TokenBuckets, keys_required, scope_of, start_notice
from htbase.config import ConfigError
from infra.keys import ApiKeys
from tests.api.conftest import API, error_of, quiet_service

URL = "https://example.org/"


def keys_of(service) -> ApiKeys:
    return ApiKeys(service.runtime.engine)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_on_loopback_the_api_is_open_until_a_key_is_made(service_on_each_database):
    service, client = service_on_each_database, service_on_each_database.api.test_client()
    assert "open to anyone" in start_notice(service.settings, keys_of(service))
    assert client.post(f"{API}/archive", json={"url": URL}).status_code == 202
    assert client.get(f"{API}/tasks").status_code == 200

    _, key = keys_of(service).create("ci", "read")
    response = client.get(f"{API}/tasks")
    assert error_of(response) == (401, "unauthorized") and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get(f"{API}/tasks", headers=bearer(key)).status_code == 200
    assert client.get(f"{API}/tasks", headers={"X-API-Key": key}).status_code == 200
    assert "needs one" in start_notice(service.settings, keys_of(service))


def test_wrong_malformed_and_revoked_keys_get_401(service_on_each_database):
    service, client = service_on_each_database, service_on_each_database.api.test_client()
    info, key = keys_of(service).create("phone", "admin")
    for wrong in (
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        f"htb_{info.prefix}_",
        "htb_0000000_x",
        "nonsense",
        "htb_" + "\x00" * 8 + "_" + "a" * 43,
        "Bearer",
    ):
        assert error_of(client.get(f"{API}/tasks", headers=bearer(wrong))) == (401, "unauthorized"), wrong
    assert client.get(f"{API}/tasks", headers={"Authorization": "Basic abc"}).status_code == 401
    assert keys_of(service).revoke(info.prefix).revoked_at is not None
    response = client.get(f"{API}/tasks", headers=bearer(key))
    assert error_of(response) == (401, "unauthorized") and "revoked" in response.get_json()["error"]["message"]
    # Revoking every key never opens the API again.
    assert client.get(f"{API}/tasks").status_code == 401


def test_scopes_nest_read_write_admin(service_on_each_database):
    service, client = service_on_each_database, service_on_each_database.api.test_client()
    read, write, admin = (keys_of(service).create(scope, scope)[1] for scope in ("read", "write", "admin"))
    submit = {"url": URL}

    assert client.get(f"{API}/tasks", headers=bearer(read)).status_code == 200
    response = client.post(f"{API}/archive", json=submit, headers=bearer(read))
    assert error_of(response) == (403, "forbidden") and "needs write" in response.get_json()["error"]["message"]
    assert client.post(f"{API}/archive", json=submit, headers=bearer(write)).status_code == 202
    assert error_of(client.get(f"{API}/keys", headers=bearer(write))) == (403, "forbidden")
    assert error_of(client.delete(f"{API}/keys/00000000", headers=bearer(write))) == (403, "forbidden")
    assert client.post(f"{API}/archive", json=submit, headers=bearer(admin)).status_code == 202


def test_keys_over_http_with_the_admin_scope(service_on_each_database):
    service, client = service_on_each_database, service_on_each_database.api.test_client()
    admin = keys_of(service).create("root", "admin")[1]
    made = client.post(f"{API}/keys", json={"name": "laptop", "scope": "write"}, headers=bearer(admin))
    assert made.status_code == 201
    new = made.get_json()
    assert new["key"].startswith(f"htb_{new['prefix']}_") and new["scope"] == "write" and new["revoked_at"] is None
    assert client.post(f"{API}/archive", json={"url": URL}, headers=bearer(new["key"])).status_code == 202

    listed = client.get(f"{API}/keys", headers=bearer(admin)).get_json()["keys"]
    assert [k["name"] for k in listed] == ["root", "laptop"] and all("key" not in k for k in listed)
    assert all(new["key"] not in str(value) for k in listed for value in k.values())  # only a hash is kept

    revoked = client.delete(f"{API}/keys/{new['prefix']}", headers=bearer(admin))
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert client.get(f"{API}/tasks", headers=bearer(new["key"])).status_code == 401
    assert error_of(client.delete(f"{API}/keys/{new['prefix']}", headers=bearer(admin))) == (404, "not_found")
    for body in (
        {"name": "x", "scope": "root"},
        {"name": "", "scope": "read"},
        {"name": "a\x00", "scope": "read"},
        {"scope": "read"},
    ):
        assert error_of(client.post(f"{API}/keys", json=body, headers=bearer(admin))) == (400, "bad_request"), body
    assert error_of(client.delete(f"{API}/keys/not-hex", headers=bearer(admin))) == (400, "bad_request")


def test_health_and_the_document_stay_open(service_on_each_database):
    service, client = service_on_each_database, service_on_each_database.api.test_client()
    keys_of(service).create("ci", "admin")
    for path in ("/healthz", f"{API}/health", f"{API}/openapi.json", f"{API}/docs", f"{API}/docs/redoc.standalone.js"):
        assert client.get(path).status_code == 200, path
    assert client.get("/no/such/route").status_code == 404  # no route, nothing to guard


def test_submissions_are_limited_per_key(embedded_settings):
    service = quiet_service(embedded_settings.with_(submission_burst=2, submissions_per_minute=1))
    try:
        client, keys = service.api.test_client(), keys_of(service)
        busy, other = keys.create("busy", "write")[1], keys.create("other", "write")[1]
        answers = [client.post(f"{API}/archive", json={"url": URL}, headers=bearer(busy)) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 429]
        assert answers[2].get_json()["error"]["code"] == "rate_limited"
        assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
        assert client.post(f"{API}/archive", json={"url": URL}, headers=bearer(other)).status_code == 202
        assert client.get(f"{API}/tasks", headers=bearer(busy)).status_code == 200  # reading is not limited
    finally:
        service.close()


def test_a_token_bucket_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, burst=2, clock=lambda: now[0])
    assert [buckets.take("k"), buckets.take("k")] == [0, 0]
    assert buckets.take("k") == pytest.approx(1.0)
    now[0] = 1.0
    assert buckets.take("k") == 0 and buckets.take("other") == 0
    assert TokenBuckets(per_minute=0, burst=1).take("k") == 0  # 0: no limit


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"host": "0.0.0.0"}, "HOST=0.0.0.0 is not loopback"),
        ({"host": "192.0.2.7"}, "HOST=192.0.2.7 is not loopback"),
        ({"api_keys_required": True}, "API_KEYS_REQUIRED is on"),
    ],
)
def test_a_start_that_needs_keys_is_refused_without_one(service, changes, reason):
    settings = service.settings.with_(**changes)
    assert keys_required(settings)
    with pytest.raises(ConfigError, match=f"{reason}.*htbase keys create --name NAME --scope admin"):
        start_notice(settings, keys_of(service))
    keys_of(service).create("ci", "admin")
    assert "needs one" in start_notice(settings, keys_of(service))


def test_loopback_and_cloud_roles():
    from htbase.config import Settings

    assert not keys_required(Settings(host="127.0.0.1")) and not keys_required(Settings(host="::1"))
    assert not keys_required(Settings(host="localhost"))
    cloud = Settings.from_env(
        {
            "SERVICE_ROLE": "api",
            "BROKER": "pubsub",
            "GOOGLE_CLOUD_PROJECT": "p",
            "DATABASE_URL": "postgresql+pg8000://u@h/db",
        }
    )
    assert keys_required(cloud)
    emulated = cloud.with_(pubsub_emulator_host="127.0.0.1:8085")
    assert not keys_required(emulated)


def test_a_route_needs_the_scope_of_its_method_unless_it_declares_one():
    from api.auth import public, requires, submission

    def plain() -> None: ...

    @requires("admin")
    def purge() -> None: ...

    @public
    def probe() -> None: ...

    @submission
    def submit() -> None: ...

    assert [scope_of(plain, m) for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")] == [
        "read",
        "read",
        "write",
        "write",
        "write",
        "admin",
        None,
    ]
    assert (scope_of(purge, "POST"), scope_of(probe, "GET"), scope_of(submit, "POST")) == ("admin", None, "write")
