"""grantlink.crypto: the round trip, one KMS call per operation, the cached default and its configuration, against
moto's KMS (FakeKms in tests/unit/crypto_fakes.py counts and fails calls). What SECURITY.md K1–K6 ask of it is
proved in tests/security/test_keys.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from grantlink import config, crypto
from tests.unit.crypto_fakes import CONTEXT, PLAINTEXT, FakeKms


def test_round_trip(crypt: crypto.Crypto) -> None:
    """Given a secret and its context, when it is encrypted and decrypted with that context, then it comes back."""
    assert crypt.decrypt(crypt.encrypt(PLAINTEXT, CONTEXT), CONTEXT) == PLAINTEXT


def test_one_kms_call_per_operation(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """Given a Crypto, when it encrypts twice and decrypts twice, then KMS saw two GenerateDataKey, two Decrypt."""
    ciphertexts = [crypt.encrypt(PLAINTEXT, CONTEXT) for _ in range(2)]
    assert kms.calls == Counter({"GenerateDataKey": 2})

    for ciphertext in ciphertexts:
        crypt.decrypt(ciphertext, CONTEXT)

    assert kms.calls == Counter({"GenerateDataKey": 2, "Decrypt": 2})


def test_default_is_built_once_from_settings(key_arn: str) -> None:
    """Given the configured key, when default() is called twice, then one Crypto under that key serves both."""
    first, second = crypto.default(), crypto.default()

    assert first is second
    assert first.key_id == key_arn
    assert first.decrypt(first.encrypt(PLAINTEXT, CONTEXT), CONTEXT) == PLAINTEXT


def test_importing_crypto_does_not_import_the_sdk() -> None:
    """Given a fresh interpreter, when grantlink.crypto is imported, then aws_encryption_sdk is not loaded."""
    code = "import sys, grantlink.crypto; sys.exit('aws_encryption_sdk' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_context_must_name_tenant_credential_and_purpose(crypt: crypto.Crypto) -> None:
    """Given a context without a purpose, when encrypting, then it is refused before any KMS call."""
    with pytest.raises(ValueError):
        crypt.encrypt(PLAINTEXT, {"tenantId": "tenant-a", "credentialId": "cred-1"})


@pytest.mark.parametrize("key_id", ["", "alias/grantlink", "1234abcd-12ab-34cd-56ef-1234567890ab"])
def test_configured_key_must_be_a_key_arn(key_arn: str, monkeypatch: pytest.MonkeyPatch, key_id: str) -> None:
    """Given no key, an alias or a bare key id configured, then Crypto refuses to start (it could never decrypt)."""
    monkeypatch.setenv("GRANTLINK_KMS_KEY_ID", key_id)
    config.reset()

    with pytest.raises(ValueError):
        crypto.default()
