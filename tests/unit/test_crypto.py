"""grantlink.crypto: envelope encryption, specified by SECURITY.md rows K1-K6, against moto's KMS.

moto does not enforce key state or policy, so KMS failures (K5) are injected with a botocore `before-call`
hook on the session that the code under test uses; the same hook counts KMS calls.
"""

from __future__ import annotations

import base64
import io
import logging
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aws_encryption_sdk
import boto3
import botocore.session
import pytest
from aws_encryption_sdk.identifiers import AlgorithmSuite, CommitmentPolicy
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from botocore.awsrequest import AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import EndpointConnectionError
from moto import mock_aws

from grantlink import config, crypto, errors

SECRET = b"sk_live_correct-horse-battery-staple"
CONTEXT = crypto.context_for("tenant-a", "cred-1", "credential")
UNAVAILABLE_CODES = ["ThrottlingException", "AccessDeniedException", "DisabledException", "KMSInvalidStateException"]


class FakeKms:
    """Counts the KMS calls made through one botocore session and answers chosen operations with an error."""

    def __init__(self, session: botocore.session.Session) -> None:
        self.calls: Counter[str] = Counter()
        self.faults: dict[str, str | Exception] = {}
        self.data_keys: list[bytes] = []
        # Clients copy the session's hooks when they are created: register before the first KMS call.
        session.register("before-call.kms", self._before_call)  # type: ignore[arg-type]  # may return a response
        session.register("after-call.kms.GenerateDataKey", self._after_generate)

    def fail(self, operation: str, error: str | Exception) -> None:
        """Answer `operation` with a KMS error code (an HTTP 400 response) or raise `error` before sending."""
        self.faults[operation] = error

    def _before_call(self, **kwargs: Any) -> tuple[AWSResponse, dict] | None:
        operation = kwargs["model"].name
        self.calls[operation] += 1
        fault = self.faults.get(operation)
        if isinstance(fault, Exception):
            raise fault
        if fault:
            parsed = {"Error": {"Code": fault, "Message": "injected"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
            return AWSResponse("https://kms.us-east-1.amazonaws.com/", 400, HTTPHeaders(), None), parsed
        return None

    def _after_generate(self, **kwargs: Any) -> None:
        if "Plaintext" in kwargs["parsed"]:
            self.data_keys.append(kwargs["parsed"]["Plaintext"])


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # mock_aws does not intercept requests to an explicitly configured endpoint.
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


def new_key() -> str:
    return boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["Arn"]


@pytest.fixture
def key_arn(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    arn = new_key()
    monkeypatch.setenv("GRANTLINK_KMS_KEY_ID", arn)
    monkeypatch.setenv("GRANTLINK_TABLE", "t")
    monkeypatch.setenv("GRANTLINK_CONNECT_BASE_URL", "http://x")
    config.reset()
    crypto.reset()
    yield arn
    config.reset()
    crypto.reset()


@pytest.fixture
def session(aws: None) -> botocore.session.Session:
    return botocore.session.Session()


@pytest.fixture
def kms(session: botocore.session.Session) -> FakeKms:
    return FakeKms(session)


@pytest.fixture
def crypt(key_arn: str, session: botocore.session.Session, kms: FakeKms) -> crypto.Crypto:
    return crypto.Crypto(botocore_session=session)


def header_of(ciphertext: bytes) -> tuple[Any, int]:
    """The parsed message header and the offset where its authentication tag starts (no KMS call)."""
    header, raw = deserialize_header(io.BytesIO(ciphertext))
    return header, len(raw)


def messages_in_chain(exc: BaseException | None) -> str:
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def flipped(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


# Round trip, K1 and the module's shape


def test_round_trip(crypt: crypto.Crypto) -> None:
    """Given a secret and its context, when it is encrypted and decrypted with that context, then it comes back."""
    assert crypt.decrypt(crypt.encrypt(SECRET, CONTEXT), CONTEXT) == SECRET


def test_ciphertext_does_not_contain_the_plaintext(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """K1: given an encrypted secret, then neither the secret nor its data key appears in the stored bytes."""
    ciphertext = crypt.encrypt(SECRET, CONTEXT)

    assert SECRET not in ciphertext
    assert kms.data_keys and all(key not in ciphertext for key in kms.data_keys)


def test_one_kms_call_per_operation(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """Given a Crypto, when it encrypts twice and decrypts twice, then KMS saw two GenerateDataKey, two Decrypt."""
    ciphertexts = [crypt.encrypt(SECRET, CONTEXT) for _ in range(2)]
    assert kms.calls == Counter({"GenerateDataKey": 2})

    for ciphertext in ciphertexts:
        crypt.decrypt(ciphertext, CONTEXT)

    assert kms.calls == Counter({"GenerateDataKey": 2, "Decrypt": 2})


def test_default_is_built_once_from_settings(key_arn: str) -> None:
    """Given the configured key, when default() is called twice, then one Crypto under that key serves both."""
    first, second = crypto.default(), crypto.default()

    assert first is second
    assert first.key_id == key_arn
    assert first.decrypt(first.encrypt(SECRET, CONTEXT), CONTEXT) == SECRET


def test_importing_crypto_does_not_import_the_sdk() -> None:
    """Given a fresh interpreter, when grantlink.crypto is imported, then aws_encryption_sdk is not loaded."""
    code = "import sys, grantlink.crypto; sys.exit('aws_encryption_sdk' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_context_must_name_tenant_credential_and_purpose(crypt: crypto.Crypto) -> None:
    """Given a context without a purpose, when encrypting, then it is refused before any KMS call."""
    with pytest.raises(ValueError):
        crypt.encrypt(SECRET, {"tenantId": "tenant-a", "credentialId": "cred-1"})


@pytest.mark.parametrize("key_id", ["", "alias/grantlink", "1234abcd-12ab-34cd-56ef-1234567890ab"])
def test_configured_key_must_be_a_key_arn(key_arn: str, monkeypatch: pytest.MonkeyPatch, key_id: str) -> None:
    """Given no key, an alias or a bare key id configured, then Crypto refuses to start (it could never decrypt)."""
    monkeypatch.setenv("GRANTLINK_KMS_KEY_ID", key_id)
    config.reset()

    with pytest.raises(ValueError):
        crypto.default()


def test_no_secret_in_logs_or_errors(crypt: crypto.Crypto, kms: FakeKms, caplog: pytest.LogCaptureFixture) -> None:
    """K1: given DEBUG logging, when secrets are encrypted, decrypted and fail, then no log or error shows them."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("grantlink").addHandler(caplog.handler)
    try:
        ciphertext = crypt.encrypt(SECRET, CONTEXT)
        crypt.decrypt(ciphertext, CONTEXT)
        with pytest.raises(errors.CryptoError) as refused:
            crypt.decrypt(ciphertext, {**CONTEXT, "credentialId": "cred-2"})
    finally:
        logging.getLogger("grantlink").removeHandler(caplog.handler)

    text = caplog.text + messages_in_chain(refused.value)
    assert "crypto failed" in caplog.text
    assert SECRET.decode() not in text
    leaks = [form for key in kms.data_keys for form in (key.hex(), str(key), base64.b64encode(key).decode())]
    assert kms.data_keys and not [form for form in leaks if form in text]


# K2: the encryption context binds tenant, credential and purpose


@pytest.mark.parametrize("field", ["tenantId", "credentialId", "purpose"])
def test_k2_other_context_does_not_decrypt(crypt: crypto.Crypto, field: str) -> None:
    """K2: given a ciphertext for one record, when decrypted with another record's context, then CryptoError."""
    ciphertext = crypt.encrypt(SECRET, CONTEXT)
    other = {**CONTEXT, field: CONTEXT[field] + "-other"}

    with pytest.raises(errors.CryptoError) as refused:
        crypt.decrypt(ciphertext, other)

    assert SECRET.decode() not in messages_in_chain(refused.value)


def test_k2_message_under_a_key_we_do_not_use_is_refused(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """K2: given a message under a KMS key we are not configured for, when decrypted, then CryptoError, no KMS call."""
    foreign = crypto.Crypto(key_id=new_key()).encrypt(SECRET, CONTEXT)

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(foreign, CONTEXT)

    assert kms.calls["Decrypt"] == 0


# K3: tampering is detected


@pytest.mark.parametrize(
    "where",
    ["message id", "encryption context", "commitment key", "header tag", "body content", "body tag"],
)
def test_k3_flipped_byte_is_detected(crypt: crypto.Crypto, where: str) -> None:
    """K3: given a stored ciphertext, when one byte is flipped (header or body), then CryptoError, no plaintext."""
    ciphertext = crypt.encrypt(SECRET, CONTEXT)
    _, header_tag = header_of(ciphertext)
    offset = {
        "message id": 5,
        "encryption context": ciphertext.index(b"tenant-a"),
        "commitment key": header_tag - 1,
        "header tag": header_tag,
        "body content": len(ciphertext) - 17,
        "body tag": len(ciphertext) - 1,
    }[where]

    with pytest.raises(errors.CryptoError) as refused:
        crypt.decrypt(flipped(ciphertext, offset), CONTEXT)

    assert SECRET.decode() not in messages_in_chain(refused.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_k3_damaged_message_is_refused(crypt: crypto.Crypto, damage: str) -> None:
    """K3: given a truncated, random or empty ciphertext, when decrypted, then CryptoError."""
    ciphertext = crypt.encrypt(SECRET, CONTEXT)
    damaged = {"truncated": ciphertext[:-1], "garbage": b"\x02" + bytes(200), "empty": b""}[damage]

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(damaged, CONTEXT)


# K4: algorithm and commitment policy pinned


def test_k4_configuration_is_pinned(crypt: crypto.Crypto, key_arn: str) -> None:
    """K4: given our client and a message it made, then commitment is required and the suite commits, unsigned."""
    sdk = crypto._sdk_client()
    header, _ = header_of(crypt.encrypt(SECRET, CONTEXT))

    assert sdk.config.commitment_policy is CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    assert sdk.config.max_encrypted_data_keys == 1
    assert header.algorithm is AlgorithmSuite.AES_256_GCM_HKDF_SHA512_COMMIT_KEY
    assert header.algorithm.is_committing() and not header.algorithm.is_signing()
    assert [key.key_provider.key_info.decode() for key in header.encrypted_data_keys] == [key_arn]


@pytest.mark.parametrize(
    "suite",
    [
        AlgorithmSuite.AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384,
        AlgorithmSuite.AES_256_GCM_IV12_TAG16_HKDF_SHA256,
        AlgorithmSuite.AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
    ],
    ids=lambda suite: suite.name,
)
def test_k4_other_suites_are_refused(
    crypt: crypto.Crypto, key_arn: str, session: botocore.session.Session, kms: FakeKms, suite: AlgorithmSuite
) -> None:
    """K4: given a message under our key but a non-committing or signed suite, when decrypted, then CryptoError."""
    policy = CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT
    if suite.is_committing():
        policy = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=session)
    message, _ = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy).encrypt(
        source=SECRET, encryption_context=CONTEXT, key_provider=provider, algorithm=suite
    )

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(message, CONTEXT)

    assert kms.calls["Decrypt"] == 0


# K5: KMS unavailable -> clean 503


@pytest.mark.parametrize("code", UNAVAILABLE_CODES)
def test_k5_kms_error_on_encrypt_is_service_unavailable(crypt: crypto.Crypto, kms: FakeKms, code: str) -> None:
    """K5: given KMS answers GenerateDataKey with an error, when encrypting, then ServiceUnavailable, one call."""
    kms.fail("GenerateDataKey", code)

    with pytest.raises(errors.ServiceUnavailable) as unavailable:
        crypt.encrypt(SECRET, CONTEXT)

    assert unavailable.value.status == 503
    assert code in messages_in_chain(unavailable.value)
    assert kms.calls == Counter({"GenerateDataKey": 1})


@pytest.mark.parametrize("code", UNAVAILABLE_CODES)
def test_k5_kms_error_on_decrypt_is_service_unavailable(crypt: crypto.Crypto, kms: FakeKms, code: str) -> None:
    """K5: given a stored secret and KMS answering Decrypt with an error, when decrypting, then ServiceUnavailable."""
    ciphertext = crypt.encrypt(SECRET, CONTEXT)
    kms.fail("Decrypt", code)

    with pytest.raises(errors.ServiceUnavailable) as unavailable:
        crypt.decrypt(ciphertext, CONTEXT)

    assert code in messages_in_chain(unavailable.value)
    assert kms.calls["Decrypt"] == 1


@pytest.mark.parametrize("operation", ["GenerateDataKey", "Decrypt"])
def test_k5_unreachable_kms_is_service_unavailable_then_recovers(
    crypt: crypto.Crypto, kms: FakeKms, operation: str
) -> None:
    """K5: given KMS cannot be reached, then ServiceUnavailable; when it is back, the same Crypto works again."""
    ciphertext = crypt.encrypt(SECRET, CONTEXT)
    kms.fail(operation, EndpointConnectionError(endpoint_url="https://kms.us-east-1.amazonaws.com/"))

    with pytest.raises(errors.ServiceUnavailable):
        crypt.decrypt(ciphertext, CONTEXT) if operation == "Decrypt" else crypt.encrypt(SECRET, CONTEXT)

    kms.faults.clear()
    assert crypt.decrypt(crypt.encrypt(SECRET, CONTEXT), CONTEXT) == SECRET


def test_k5_wrong_ciphertext_from_kms_is_not_an_outage(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """K5: given KMS rejects the data key as InvalidCiphertextException, when decrypting, then CryptoError, not 503."""
    ciphertext = crypt.encrypt(SECRET, CONTEXT)
    kms.fail("Decrypt", "InvalidCiphertextException")

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(ciphertext, CONTEXT)


# K6: re-encryption to a new key is idempotent


def test_k6_reencrypt_twice_then_everything_decrypts(
    crypt: crypto.Crypto, session: botocore.session.Session, kms: FakeKms
) -> None:
    """K6: given a secret under the old key, when re-encrypted to a new key twice, then all versions decrypt."""
    new_arn = new_key()
    original = crypt.encrypt(SECRET, CONTEXT)

    once = crypt.reencrypt(original, CONTEXT, new_arn)
    twice = crypt.reencrypt(once, CONTEXT, new_arn)

    rotated = crypto.Crypto(botocore_session=session, key_id=new_arn, previous_key_ids=[crypt.key_id])
    for ciphertext in (original, once, twice):
        assert rotated.decrypt(ciphertext, CONTEXT) == SECRET
    assert crypt.decrypt(original, CONTEXT) == SECRET


def test_k6_reencrypted_message_names_only_the_new_key(crypt: crypto.Crypto, session: botocore.session.Session) -> None:
    """K6: given a re-encrypted message, then its one data key is under the new key and the new key alone opens it."""
    new_arn = new_key()

    reencrypted = crypt.reencrypt(crypt.encrypt(SECRET, CONTEXT), CONTEXT, new_arn)

    header, _ = header_of(reencrypted)
    assert [key.key_provider.key_info.decode() for key in header.encrypted_data_keys] == [new_arn]
    assert crypto.Crypto(botocore_session=session, key_id=new_arn).decrypt(reencrypted, CONTEXT) == SECRET
    with pytest.raises(errors.CryptoError):
        crypt.decrypt(reencrypted, CONTEXT)
