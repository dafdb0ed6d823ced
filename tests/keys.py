"""Service-account keys made here: they sign for real, but no Google endpoint knows them."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def service_account_key(email: str, project: str) -> dict:
    """The JSON of a service-account key file (what GOOGLE_APPLICATION_CREDENTIALS points at)."""
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    return {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "local",
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
