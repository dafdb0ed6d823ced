"""Push authentication, proven through the functions-framework targets in functions/main.py.

Google's side is real too: RSA keys and self-signed certificates made here, the
certificates served the way Google serves them ({key id: PEM} with
Cache-Control) by a local HTTP server, and tokens signed with google.auth.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from functions.auth import GoogleCerts, PushAuthenticator, PushUnauthorized, SharedTokenAuthenticator
from functions.push import create_push_app
from functions.worker import Worker as Runtime
from htbase.config import ConfigError, Settings
from htbase.messages import ArchiveRequest, build_push_envelope
from htbase.topology import ROUTES
from infra.db import migrate

AUDIENCE = "https://htbase-archiver-pdf-x7k2-uc.a.run.app/"
PUSH_SERVICE_ACCOUNT = "pubsub-push@htbase-prod.iam.gserviceaccount.com"
SHARED_TOKEN = "emulator-push-token-4f9a"
TARGETS = ("archive_pdf", "summarize", "dead_letter")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    signer: crypt.RSASigner
    cert_pem: str


def make_key(kid: str) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test signer")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(
        kid,
        crypt.RSASigner.from_string(private_pem, key_id=kid),
        cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def mint(key: SigningKey, kid: str | None = None, **changes) -> str:
    """A token shaped like the ones Pub/Sub push sends; a change to None drops the claim."""
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "1067",
        "sub": "1067",
        "email": PUSH_SERVICE_ACCOUNT,
        "email_verified": True,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(changes)
    return jwt.encode(key.signer, {k: v for k, v in claims.items() if v is not None}, key_id=kid).decode()


def unsigned(**claims) -> str:
    segment = lambda obj: base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims)}."


class CertServer:
    """Serves certificates like https://www.googleapis.com/oauth2/v1/certs, and counts the fetches."""

    def __init__(self, certs: dict[str, str], max_age_s: int = 3600) -> None:
        self.certs, self.max_age_s, self.status, self.fetches = certs, max_age_s, 200, 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                owner.fetches += 1
                body = json.dumps(owner.certs).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={owner.max_age_s}, must-revalidate")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/oauth2/v1/certs"

    def __enter__(self) -> CertServer:
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def google_key() -> SigningKey:
    return make_key("google-key-1")


@pytest.fixture(scope="module")
def forger_key() -> SigningKey:
    return make_key("google-key-1")  # claims Google's key id, signs with its own key


@pytest.fixture
def cert_server(google_key):
    with CertServer({google_key.kid: google_key.cert_pem}) as server:
        yield server


def cloud_env(cert_server: CertServer) -> dict[str, str]:
    return {"PUSH_AUDIENCE": AUDIENCE, "PUSH_SERVICE_ACCOUNT": PUSH_SERVICE_ACCOUNT, "OIDC_CERTS_URL": cert_server.url}


def push_body() -> dict:
    """A well-formed push for a task this service never heard of: acknowledged (200) once authenticated."""
    request = ArchiveRequest("no-such-task", "item", "https://example.org/", "pdf")
    return build_push_envelope(request.to_json(), subscription="projects/p/subscriptions/htbase-pdf")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response, reason: str, capsys, *, runtime_built: bool = False) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "unauthorized" and reason in error["message"]
    logged = capsys.readouterr().err
    assert "push refused: not authenticated" in logged and reason in logged
    if not runtime_built:  # refused before the runtime (database, storage, browser) was even built
        assert sys.modules["main"].runtime.cache_info().currsize == 0


def test_a_google_signed_token_for_our_audience_and_account_is_accepted(serve_target, cert_server, google_key):
    client = serve_target("archive_pdf", **cloud_env(cert_server))
    for _ in range(3):
        response = client.post("/", json=push_body(), headers=bearer(mint(google_key)))
        assert response.status_code == 200, response.get_data(as_text=True)
    assert (
        client.post("/", json=push_body(), headers=bearer(mint(google_key, iss="accounts.google.com"))).status_code
        == 200
    )
    assert cert_server.fetches == 1  # the certificates are cached, not fetched per push


@pytest.mark.parametrize(
    "authorization, reason",
    [
        pytest.param(lambda google, forger: None, "no OIDC token", id="no-header"),
        pytest.param(lambda google, forger: "Basic dXNlcjpwYXNz", "no OIDC token", id="not-bearer"),
        pytest.param(lambda google, forger: f"Bearer {SHARED_TOKEN}", "not a JWT", id="shared-token-in-cloud-mode"),
        pytest.param(lambda google, forger: "Bearer a.b.c", "invalid OIDC token", id="garbage"),
        pytest.param(lambda google, forger: f"Bearer {mint(forger)}", "Could not verify token signature", id="forged"),
        pytest.param(
            lambda google, forger: f"Bearer {mint(google, kid='retired-key')}",
            "Certificate for key id",
            id="unknown-key",
        ),
        pytest.param(
            lambda google, forger: f"Bearer {unsigned(aud=AUDIENCE, email=PUSH_SERVICE_ACCOUNT)}",
            "Unsupported signature algorithm",
            id="alg-none",
        ),
        pytest.param(
            lambda google, forger: f"Bearer {mint(google, exp=int(time.time()) - 60)}", "Token expired", id="expired"
        ),
        pytest.param(
            lambda google, forger: f"Bearer {mint(google, aud='https://another-service.run.app/')}",
            "wrong audience",
            id="wrong-audience",
        ),
        pytest.param(
            lambda google, forger: f"Bearer {mint(google, iss='https://issuer.example')}",
            "is not Google",
            id="wrong-issuer",
        ),
        pytest.param(
            lambda google, forger: f"Bearer {mint(google, email='intruder@other.iam.gserviceaccount.com')}",
            "not an allowed service account",
            id="wrong-email",
        ),
        pytest.param(
            lambda google, forger: f"Bearer {mint(google, email_verified=False)}",
            "email is not verified",
            id="email-not-verified",
        ),
        pytest.param(
            lambda google, forger: f"Bearer {mint(google, email_verified=None)}",
            "email is not verified",
            id="email-verified-missing",
        ),
    ],
)
def test_pushes_without_a_valid_google_token_are_refused(
    serve_target, cert_server, google_key, forger_key, capsys, authorization, reason
):
    header = authorization(google_key, forger_key)
    client = serve_target("archive_pdf", **cloud_env(cert_server))
    response = client.post("/", json=push_body(), headers={"Authorization": header} if header else {})
    assert_refused(response, reason, capsys)


def test_unreachable_google_certs_refuse_with_401_not_a_crash(serve_target, cert_server, google_key, capsys):
    cert_server.status = 503
    client = serve_target("archive_pdf", **cloud_env(cert_server))
    assert_refused(
        client.post("/", json=push_body(), headers=bearer(mint(google_key))),
        "cannot fetch the OIDC signing certificates",
        capsys,
    )


def test_the_emulator_shared_token_is_accepted_in_the_query_or_as_a_bearer(serve_target):
    client = serve_target("archive_pdf", PUSH_AUTH_TOKEN=SHARED_TOKEN)
    assert client.post(f"/?token={SHARED_TOKEN}", json=push_body()).status_code == 200
    assert client.post("/", json=push_body(), headers=bearer(SHARED_TOKEN)).status_code == 200


@pytest.mark.parametrize(
    "url, headers, reason",
    [
        pytest.param("/", {}, "no push token", id="none"),
        pytest.param("/?token=", {}, "no push token", id="empty"),
        pytest.param("/?token=wrong-guess", {}, "wrong push token", id="wrong"),
        pytest.param(f"/?token={SHARED_TOKEN[:-1]}", {}, "wrong push token", id="prefix"),
        pytest.param("/?token=%C3%A9t%C3%A9", {}, "wrong push token", id="non-ascii"),
        pytest.param("/", bearer("wrong-guess"), "wrong push token", id="wrong-bearer"),
    ],
)
def test_the_emulator_mode_refuses_a_missing_or_wrong_token(serve_target, capsys, url, headers, reason):
    client = serve_target("archive_pdf", PUSH_AUTH_TOKEN=SHARED_TOKEN)
    assert_refused(client.post(url, json=push_body(), headers=headers), reason, capsys)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(
    "env, url, reason",
    [
        pytest.param(
            {},
            f"/?token={SHARED_TOKEN}",
            "push authentication is not configured: set PUSH_AUDIENCE or PUSH_AUTH_TOKEN",
            id="not-configured",
        ),
        pytest.param({"PUSH_AUTH_TOKEN": SHARED_TOKEN}, "/", "no push token", id="token-mode"),
    ],
)
def test_every_target_authenticates(serve_target, capsys, target, env, url, reason):
    assert_refused(serve_target(target, **env).post(url, json=push_body()), reason, capsys)


def test_the_audience_wins_over_a_shared_token(serve_target, cert_server, capsys):
    client = serve_target("archive_pdf", PUSH_AUTH_TOKEN=SHARED_TOKEN, **cloud_env(cert_server))
    assert_refused(client.post(f"/?token={SHARED_TOKEN}", json=push_body()), "no OIDC token", capsys)


def test_an_audience_without_a_service_account_is_a_configuration_error():
    with pytest.raises(ConfigError, match="PUSH_SERVICE_ACCOUNT or PUSH_ALLOWED_SERVICE_ACCOUNTS"):
        PushAuthenticator.from_settings(Settings(push_audience=AUDIENCE))


def test_pubsub_and_scheduler_identities_are_accepted_with_one_audience(serve_target, cert_server, google_key, capsys):
    scheduler = "htbase-scheduler@htbase-prod.iam.gserviceaccount.com"
    client = serve_target(
        "housekeeping", SERVICE_ROLE="api", PUSH_ALLOWED_SERVICE_ACCOUNTS=f" {scheduler}, ", **cloud_env(cert_server)
    )
    for email in (scheduler, PUSH_SERVICE_ACCOUNT):
        response = client.post("/", headers=bearer(mint(google_key, email=email)))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert all(isinstance(count, int) for count in response.get_json().values())  # a housekeeping round ran
    intruder = mint(google_key, email="intruder@htbase-prod.iam.gserviceaccount.com")
    assert_refused(
        client.post("/", headers=bearer(intruder)), "not an allowed service account", capsys, runtime_built=True
    )


def test_the_allowed_list_alone_names_the_identities(serve_target, cert_server, google_key, capsys):
    env = {**cloud_env(cert_server), "PUSH_SERVICE_ACCOUNT": "", "PUSH_ALLOWED_SERVICE_ACCOUNTS": PUSH_SERVICE_ACCOUNT}
    client = serve_target("archive_pdf", **env)
    assert client.post("/", json=push_body(), headers=bearer(mint(google_key))).status_code == 200
    stranger = mint(google_key, email="other@x.iam.gserviceaccount.com")
    assert_refused(
        client.post("/", json=push_body(), headers=bearer(stranger)),
        "not an allowed service account",
        capsys,
        runtime_built=True,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        pytest.param(
            {"DATABASE_URL": "sqlite:////tmp/own.db"}, "needs the shared PostgreSQL ledger, not sqlite", id="sqlite"
        ),
        pytest.param({"PUBSUB_EMULATOR_HOST": ""}, "needs Pub/Sub", id="no-broker"),
    ],
)
def test_a_misconfigured_service_refuses_to_start(serve_target, env, message):
    with pytest.raises(ConfigError, match=message):
        serve_target("archive_pdf", PUSH_AUTH_TOKEN=SHARED_TOKEN, **env)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_certs_are_refetched_after_their_max_age_and_kept_through_a_failed_refresh(google_key, caplog):
    with CertServer({google_key.kid: google_key.cert_pem}, max_age_s=60) as server:
        clock = Clock()
        certs = GoogleCerts(server.url, clock=clock)
        assert certs.get() == {google_key.kid: google_key.cert_pem} and server.fetches == 1
        clock.now += 59
        certs.get()
        assert server.fetches == 1
        clock.now += 2
        server.status = 500
        assert certs.get() == {google_key.kid: google_key.cert_pem} and server.fetches == 2
        assert "OIDC certificate refresh failed" in caplog.text
        clock.now += 30
        certs.get()
        assert server.fetches == 2  # a failed refresh is not retried on every push
        clock.now += 31
        server.status, server.certs = 200, {"google-key-2": google_key.cert_pem}
        assert certs.get() == {"google-key-2": google_key.cert_pem} and server.fetches == 3


def test_no_certs_at_all_is_a_refusal_and_the_next_push_tries_again(google_key):
    with CertServer({google_key.kid: google_key.cert_pem}) as server:
        server.status = 500
        certs = GoogleCerts(server.url)
        with pytest.raises(PushUnauthorized, match="cannot fetch"):
            certs.get()
        server.status = 200
        assert certs.get() == {google_key.kid: google_key.cert_pem} and server.fetches == 2


def test_the_in_process_push_app_skips_authentication_only_when_given_none(tmp_path):
    runtime = Runtime(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'htbase.db'}",
            local_storage_path=tmp_path / "archives",
            archivers=("pdf",),
        )
    )
    migrate(runtime.engine)
    try:
        guarded = create_push_app(runtime, authenticator=SharedTokenAuthenticator(SHARED_TOKEN)).test_client()
        open_in_process = create_push_app(runtime, authenticator=None).test_client()
        for route in {r.path for r in ROUTES}:
            assert guarded.post(route, json=push_body()).status_code == 401
            # Past authentication, the handler acknowledges the push for an unknown task.
            assert guarded.post(f"{route}?token={SHARED_TOKEN}", json=push_body()).status_code == 200
            assert open_in_process.post(route, json=push_body()).status_code == 200
    finally:
        runtime.close()
