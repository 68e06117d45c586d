"""SECURITY.md "Keys and ciphertexts" (K1–K6): envelope encryption under KMS — grantlink.crypto against a bare
moto KMS (FakeKms in tests/unit/crypto_fakes.py counts calls and injects the errors moto cannot: key state and
policy), then the same properties through the connect flow and the credentials API, and, for K1 and T2 together,
a scan of both tables after every flow has run.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aws_encryption_sdk
import botocore.session
import pytest
from aws_encryption_sdk.identifiers import AlgorithmSuite, CommitmentPolicy
from aws_encryption_sdk.internal.formatting.deserialize import deserialize_header
from botocore.exceptions import ClientError, EndpointConnectionError

from grantlink import connect, crypto, errors
from grantlink.store import default as default_store
from tests.helpers import SECRET, connected, creds, new_link
from tests.security.flows import run_every_flow
from tests.unit.crypto_fakes import CONTEXT, PLAINTEXT, FakeKms, new_key
from tests.unit.oauth_fakes import FakeAuthorizationServer

UNAVAILABLE_CODES = ["ThrottlingException", "AccessDeniedException", "DisabledException", "KMSInvalidStateException"]


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


def test_ciphertext_does_not_contain_the_plaintext(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """K1: given an encrypted secret, then neither the secret nor its data key appears in the stored bytes."""
    ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)

    assert PLAINTEXT not in ciphertext
    assert kms.data_keys and all(key not in ciphertext for key in kms.data_keys)


def test_no_secret_in_logs_or_errors(crypt: crypto.Crypto, kms: FakeKms, caplog: pytest.LogCaptureFixture) -> None:
    """K1: given DEBUG logging, when secrets are encrypted, decrypted and fail, then no log or error shows them."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("grantlink").addHandler(caplog.handler)
    try:
        ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)
        crypt.decrypt(ciphertext, CONTEXT)
        with pytest.raises(errors.CryptoError) as refused:
            crypt.decrypt(ciphertext, {**CONTEXT, "credentialId": "cred-2"})
    finally:
        logging.getLogger("grantlink").removeHandler(caplog.handler)

    text = caplog.text + messages_in_chain(refused.value)
    assert "crypto failed" in caplog.text
    assert PLAINTEXT.decode() not in text
    leaks = [form for key in kms.data_keys for form in (key.hex(), str(key), base64.b64encode(key).decode())]
    assert kms.data_keys and not [form for form in leaks if form in text]


@pytest.mark.parametrize("field", ["tenantId", "credentialId", "purpose"])
def test_k2_other_context_does_not_decrypt(crypt: crypto.Crypto, field: str) -> None:
    """K2: given a ciphertext for one record, when decrypted with another record's context, then CryptoError."""
    ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)
    other = {**CONTEXT, field: CONTEXT[field] + "-other"}

    with pytest.raises(errors.CryptoError) as refused:
        crypt.decrypt(ciphertext, other)

    assert PLAINTEXT.decode() not in messages_in_chain(refused.value)


def test_k2_message_under_a_key_we_do_not_use_is_refused(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """K2: given a message under a KMS key we are not configured for, when decrypted, then CryptoError, no KMS call."""
    foreign = crypto.Crypto(key_id=new_key()).encrypt(PLAINTEXT, CONTEXT)

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(foreign, CONTEXT)

    assert kms.calls["Decrypt"] == 0


@pytest.mark.parametrize(
    "where",
    ["message id", "encryption context", "commitment key", "header tag", "body content", "body tag"],
)
def test_k3_flipped_byte_is_detected(crypt: crypto.Crypto, where: str) -> None:
    """K3: given a stored ciphertext, when one byte is flipped (header or body), then CryptoError, no plaintext."""
    ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)
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

    assert PLAINTEXT.decode() not in messages_in_chain(refused.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_k3_damaged_message_is_refused(crypt: crypto.Crypto, damage: str) -> None:
    """K3: given a truncated, random or empty ciphertext, when decrypted, then CryptoError."""
    ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)
    damaged = {"truncated": ciphertext[:-1], "garbage": b"\x02" + bytes(200), "empty": b""}[damage]

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(damaged, CONTEXT)


def test_k4_configuration_is_pinned(crypt: crypto.Crypto, key_arn: str) -> None:
    """K4: given our client and a message it made, then commitment is required and the suite commits, unsigned."""
    sdk = crypto._sdk_client()
    header, _ = header_of(crypt.encrypt(PLAINTEXT, CONTEXT))

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
    crypt: crypto.Crypto, key_arn: str, kms_session: botocore.session.Session, kms: FakeKms, suite: AlgorithmSuite
) -> None:
    """K4: given a message under our key but a non-committing or signed suite, when decrypted, then CryptoError."""
    policy = CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT
    if suite.is_committing():
        policy = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
    provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[key_arn], botocore_session=kms_session)
    message, _ = aws_encryption_sdk.EncryptionSDKClient(commitment_policy=policy).encrypt(
        source=PLAINTEXT, encryption_context=CONTEXT, key_provider=provider, algorithm=suite
    )

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(message, CONTEXT)

    assert kms.calls["Decrypt"] == 0


@pytest.mark.parametrize("code", UNAVAILABLE_CODES)
def test_k5_kms_error_on_encrypt_is_service_unavailable(crypt: crypto.Crypto, kms: FakeKms, code: str) -> None:
    """K5: given KMS answers GenerateDataKey with an error, when encrypting, then ServiceUnavailable, one call."""
    kms.fail("GenerateDataKey", code)

    with pytest.raises(errors.ServiceUnavailable) as unavailable:
        crypt.encrypt(PLAINTEXT, CONTEXT)

    assert unavailable.value.status == 503
    assert code in messages_in_chain(unavailable.value)
    assert kms.calls == Counter({"GenerateDataKey": 1})


@pytest.mark.parametrize("code", UNAVAILABLE_CODES)
def test_k5_kms_error_on_decrypt_is_service_unavailable(crypt: crypto.Crypto, kms: FakeKms, code: str) -> None:
    """K5: given a stored secret and KMS answering Decrypt with an error, when decrypting, then ServiceUnavailable."""
    ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)
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
    ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)
    kms.fail(operation, EndpointConnectionError(endpoint_url="https://kms.us-east-1.amazonaws.com/"))

    with pytest.raises(errors.ServiceUnavailable):
        crypt.decrypt(ciphertext, CONTEXT) if operation == "Decrypt" else crypt.encrypt(PLAINTEXT, CONTEXT)

    kms.faults.clear()
    assert crypt.decrypt(crypt.encrypt(PLAINTEXT, CONTEXT), CONTEXT) == PLAINTEXT


def test_k5_wrong_ciphertext_from_kms_is_not_an_outage(crypt: crypto.Crypto, kms: FakeKms) -> None:
    """K5: given KMS rejects the data key as InvalidCiphertextException, when decrypting, then CryptoError, not 503."""
    ciphertext = crypt.encrypt(PLAINTEXT, CONTEXT)
    kms.fail("Decrypt", "InvalidCiphertextException")

    with pytest.raises(errors.CryptoError):
        crypt.decrypt(ciphertext, CONTEXT)


def test_k6_reencrypt_twice_then_everything_decrypts(
    crypt: crypto.Crypto, kms_session: botocore.session.Session, kms: FakeKms
) -> None:
    """K6: given a secret under the old key, when re-encrypted to a new key twice, then all versions decrypt."""
    new_arn = new_key()
    original = crypt.encrypt(PLAINTEXT, CONTEXT)

    once = crypt.reencrypt(original, CONTEXT, new_arn)
    twice = crypt.reencrypt(once, CONTEXT, new_arn)

    rotated = crypto.Crypto(botocore_session=kms_session, key_id=new_arn, previous_key_ids=[crypt.key_id])
    for ciphertext in (original, once, twice):
        assert rotated.decrypt(ciphertext, CONTEXT) == PLAINTEXT
    assert crypt.decrypt(original, CONTEXT) == PLAINTEXT


def test_k6_reencrypted_message_names_only_the_new_key(
    crypt: crypto.Crypto, kms_session: botocore.session.Session
) -> None:
    """K6: given a re-encrypted message, then its one data key is under the new key and the new key alone opens it."""
    new_arn = new_key()

    reencrypted = crypt.reencrypt(crypt.encrypt(PLAINTEXT, CONTEXT), CONTEXT, new_arn)

    header, _ = header_of(reencrypted)
    assert [key.key_provider.key_info.decode() for key in header.encrypted_data_keys] == [new_arn]
    assert crypto.Crypto(botocore_session=kms_session, key_id=new_arn).decrypt(reencrypted, CONTEXT) == PLAINTEXT
    with pytest.raises(errors.CryptoError):
        crypt.decrypt(reencrypted, CONTEXT)


# --- through the connect flow and the credentials API ----------------------------------------------------------


def test_k1_the_secret_is_stored_only_as_ciphertext(aws_env: Any, table_items: Any) -> None:
    """K1: scan the table: the secret's bytes appear nowhere; the ciphertext decrypts under its context."""
    link, token = new_link(9002)
    done = connect.submit(link.id, token, {"username": "ada", "password": SECRET})
    dump = json.dumps(table_items(), default=str)
    assert SECRET not in dump
    raw = bytes(default_store().get_credential(done.credential.id).secret)  # type: ignore[union-attr]
    assert SECRET.encode() not in raw
    plain = crypto.default().decrypt(raw, crypto.context_for("tnt_a", done.credential.id, "credential"))
    assert json.loads(plain)["fields"] == {"username": "ada", "password": SECRET}


@pytest.mark.parametrize("code", ["ThrottlingException", "AccessDeniedException", "DisabledException"])
def test_k5_kms_failure_is_a_503_and_nothing_is_written(
    aws_env: Any, table_items: Any, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """K5: KMS throttled / denied / disabled → ServiceUnavailable; the link still waits, no credential."""
    link, token = new_link()
    before = table_items()

    def refuse(*_: Any, **__: Any) -> bytes:
        cause = ClientError({"Error": {"Code": code, "Message": "no"}}, "GenerateDataKey")
        raise errors.ServiceUnavailable() from cause

    monkeypatch.setattr(crypto.Crypto, "encrypt", refuse)
    with pytest.raises(errors.ServiceUnavailable):
        connect.submit(link.id, token, {"apiKey": SECRET})
    assert table_items() == before


def test_k2_a_ciphertext_copied_to_another_credential_does_not_decrypt(aws_env: Any, dynamodb: Any) -> None:
    """K2: the encryption context binds tenant and credential; a moved ciphertext is refused, not revealed."""
    first, second = connected(), connected()
    table = aws_env["env"]["GRANTLINK_TABLE"]
    stolen = dynamodb.get_item(TableName=table, Key={"pk": {"S": f"CRED#{first}"}, "sk": {"S": "CRED"}})["Item"][
        "secret"
    ]
    dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": f"CRED#{second}"}, "sk": {"S": "CRED"}},
        UpdateExpression="SET secret = :s",
        ExpressionAttributeValues={":s": stolen},
    )
    status, answer, _ = creds("read_secret", second)
    assert (status, answer["error"]["code"]) == (500, "decryption_failed")
    assert SECRET not in json.dumps(answer)


def test_k3_a_flipped_byte_is_a_clean_error(aws_env: Any, dynamodb: Any) -> None:
    """K3: a byte flipped in a stored ciphertext → a clean decryption_failed error through the API."""
    cid = connected()
    table = aws_env["env"]["GRANTLINK_TABLE"]
    key = {"pk": {"S": f"CRED#{cid}"}, "sk": {"S": "CRED"}}
    blob = bytearray(dynamodb.get_item(TableName=table, Key=key)["Item"]["secret"]["B"])
    blob[-40] ^= 0x01
    dynamodb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET secret = :s",
        ExpressionAttributeValues={":s": {"B": bytes(blob)}},
    )
    status, answer, _ = creds("read_secret", cid)
    assert (status, answer["error"]["code"]) == (500, "decryption_failed")


# --- K1 and T2 at rest, after every flow --------------------------------------------------------------------------


def binaries(value: Any) -> Iterator[bytes]:
    """Every binary (B, BS) inside a DynamoDB attribute value, however deep in maps and lists."""
    if isinstance(value, dict):
        for kind, inner in value.items():
            if kind == "B":
                yield bytes(inner)
            elif kind == "BS":
                yield from (bytes(b) for b in inner)
            else:
                yield from binaries(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from binaries(inner)


def test_k1_t2_no_secret_token_or_key_is_stored_in_either_table(
    provider_server: FakeAuthorizationServer, aws_env: Any, delivered_events: Any, dynamodb: Any, table_items: Any
) -> None:
    """K1, T2: after every flow has run (tests/security/flows.py: API key, links, the connect page for API-key and
    basic partners, the credentials API, a connection test, an OAuth client, flow and refresh, the renewal jobs, a
    reauthorization), no item of the main table or of the idempotency table holds any secret the flows saw — a
    submitted api_key or password, a raw link token, an access or refresh token, the API key, the OAuth client
    secret, an authorization code, a state or a code_verifier — neither in its DynamoDB JSON (binaries as
    base64, as on the wire) nor in the bytes of its binary attributes (the ciphertexts); while the ciphertexts
    there do open to those secrets."""
    seen, credentials = run_every_flow(provider_server, aws_env, delivered_events)
    idempotency = dynamodb.scan(TableName=aws_env["env"]["GRANTLINK_IDEMPOTENCY_TABLE"])["Items"]
    items = [("main", item) for item in table_items()] + [("idempotency", item) for item in idempotency]
    assert len(idempotency) == 1
    assert {item["pk"]["S"].split("#")[0] for table, item in items if table == "main"} >= {"TENANT", "SHARE", "CRED"}

    found = []
    for table, item in items:
        wire = json.dumps(item, default=lambda b: base64.b64encode(b).decode())
        blobs = list(binaries(item))
        for kind, value in seen.values():
            if value in wire or any(value.encode() in blob for blob in blobs):
                key = item["id"]["S"] if table == "idempotency" else f"{item['pk']['S']} / {item['sk']['S']}"
                found.append(f"{kind} in the {table} table, item {key}")
    assert found == []

    stored = {name: default_store().get_credential(credential_id) for name, credential_id in credentials.items()}
    assert all(credential and credential.secret for credential in stored.values())  # the scan saw ciphertexts
    opened = {
        name: crypto.default().decrypt(bytes(c.secret), crypto.context_for(c.tenant_id, c.id, "credential"))  # type: ignore[union-attr]
        for name, c in stored.items()
    }
    assert any(value.encode() in opened["apikey"] for _, value in seen.values("submitted api_key"))
    assert any(value.encode() in opened["basic"] for _, value in seen.values("submitted password"))
    assert any(value.encode() in opened["oauth"] for _, value in seen.values("refresh token"))
    assert any(value.encode() in opened["client_credentials"] for _, value in seen.values("customer client secret"))
