"""Envelope encryption of secrets with the AWS Encryption SDK under a KMS key.

Every message uses a key-committing suite without signatures (decrypt refuses any other), the client requires
commitment on encrypt and decrypt and accepts one encrypted data key, and a strict KMS provider names the keys
it may use. The encryption context `{tenantId, credentialId, purpose}` binds a ciphertext to one record;
decrypt checks it before releasing any plaintext.

`aws_encryption_sdk` is imported only inside the functions that use it: handlers that never touch a secret do
not pay for it at cold start. AWS errors are translated here, once: an unreachable, throttled, disabled or
forbidden KMS key is `ServiceUnavailable` (503); anything else that stops a decrypt is `CryptoError`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from grantlink import config, errors
from grantlink.observability import logger

if TYPE_CHECKING:
    import botocore.session

ALGORITHM_SUITE = "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"
COMMITMENT_POLICY = "REQUIRE_ENCRYPT_REQUIRE_DECRYPT"
CONTEXT_KEYS = ("tenantId", "credentialId", "purpose")
KMS_UNAVAILABLE = frozenset(
    {
        "ThrottlingException",
        "AccessDeniedException",
        "DisabledException",
        "KMSInvalidStateException",
        "NotFoundException",
        "KeyUnavailableException",
        "DependencyTimeoutException",
        "KMSInternalException",
    }
)


def context_for(tenant_id: str, credential_id: str, purpose: str) -> dict[str, str]:
    """The encryption context binding a ciphertext to one tenant, one credential and one use."""
    return {"tenantId": tenant_id, "credentialId": credential_id, "purpose": purpose}


class Crypto:
    """Encrypts and decrypts secrets under the configured KMS key.

    `key_id` must be a key ARN (the strict provider decrypts only with ARNs); it defaults to
    `settings().kms_key_id`. `previous_key_ids` are keys that decrypt still accepts during a rotation.
    """

    def __init__(
        self,
        botocore_session: botocore.session.Session | None = None,
        key_id: str | None = None,
        previous_key_ids: Sequence[str] = (),
    ) -> None:
        self.key_id = _require_key_arn(key_id or config.settings().kms_key_id)
        self.previous_key_ids = tuple(_require_key_arn(arn) for arn in previous_key_ids)
        self._session = botocore_session
        self._providers: dict[tuple[str, ...], Any] = {}

    def encrypt(self, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypt `plaintext` under the configured key, bound to `context` (see `context_for`)."""
        return self._encrypt(plaintext, context, self.key_id)

    def decrypt(self, ciphertext: bytes, context: Mapping[str, str]) -> bytes:
        """Decrypt a message made by `encrypt` with the same `context`; `CryptoError` if it is not exactly that."""
        return self._decrypt(ciphertext, context, (self.key_id, *self.previous_key_ids))

    def prepare(self, context: Mapping[str, str]) -> Sealer:
        """Fetch one data key for `context` now, so that a later `Sealer.seal` needs no KMS call.

        Used where something irreplaceable arrives after a call that cannot be repeated: a rotated refresh token
        comes back from the partner once, and a KMS throttle or outage right then must not lose it."""
        _require_context(context)
        with _translated("encrypt"):
            return Sealer(self._materials(context, self.key_id), context)

    def _materials(self, context: Mapping[str, str], key_id: str) -> Any:
        import aws_encryption_sdk
        from aws_encryption_sdk.internal.defaults import FRAME_LENGTH
        from aws_encryption_sdk.materials_managers import EncryptionMaterialsRequest
        from aws_encryption_sdk.materials_managers.default import DefaultCryptoMaterialsManager

        request = EncryptionMaterialsRequest(
            encryption_context=dict(context),
            frame_length=FRAME_LENGTH,
            algorithm=_algorithm_suite(),
            commitment_policy=aws_encryption_sdk.CommitmentPolicy[COMMITMENT_POLICY],
        )
        return DefaultCryptoMaterialsManager(self._provider((key_id,))).get_encryption_materials(request)

    def reencrypt(self, ciphertext: bytes, context: Mapping[str, str], new_key_id: str) -> bytes:
        """Decrypt `ciphertext` and encrypt it again under `new_key_id`; safe to run again on its own output."""
        key_ids = tuple(dict.fromkeys((self.key_id, *self.previous_key_ids, _require_key_arn(new_key_id))))
        return self._encrypt(self._decrypt(ciphertext, context, key_ids), context, new_key_id)

    def _encrypt(self, plaintext: bytes, context: Mapping[str, str], key_id: str) -> bytes:
        _require_context(context)
        with _translated("encrypt"):
            ciphertext, _header = _sdk_client().encrypt(
                source=plaintext,
                encryption_context=dict(context),
                key_provider=self._provider((key_id,)),
                algorithm=_algorithm_suite(),
            )
        return ciphertext

    def _decrypt(self, ciphertext: bytes, context: Mapping[str, str], key_ids: tuple[str, ...]) -> bytes:
        _require_context(context)
        with _translated("decrypt"):
            # "decrypt-unsigned" refuses signed suites; with commitment required, only ours is left.
            provider = self._provider(key_ids)
            with _sdk_client().stream(mode="decrypt-unsigned", source=ciphertext, key_provider=provider) as message:
                # Checked before any of the body is decrypted: a mismatch releases no plaintext.
                _check_context(message.header.encryption_context, context)
                return message.read()

    def _provider(self, key_ids: tuple[str, ...]) -> Any:
        if key_ids not in self._providers:
            from grantlink.aws import creation_lock

            with creation_lock:  # the provider builds its KMS client from the shared session
                self._providers[key_ids] = _provider_class()(
                    key_ids=list(key_ids), botocore_session=self.botocore_session
                )
        return self._providers[key_ids]

    @property
    def botocore_session(self) -> botocore.session.Session:
        """The injected session, or the process's shared one (`grantlink.aws`: short timeouts, standard retries;
        it honours AWS_ENDPOINT_URL and the usual config)."""
        if self._session is None:
            from grantlink.aws import botocore_session

            self._session = botocore_session()
        return self._session


class Sealer:
    """One message's worth of encryption materials fetched ahead of time (`Crypto.prepare`): sealing is local.

    Single use: the data key encrypts exactly one message, then is forgotten."""

    def __init__(self, materials: Any, context: Mapping[str, str]) -> None:
        self._materials: Any = materials
        self._context = dict(context)

    def seal(self, plaintext: bytes) -> bytes:
        if self._materials is None:
            raise RuntimeError("a Sealer seals one message only")
        materials, self._materials = self._materials, None
        with _translated("encrypt"):
            ciphertext, _header = _sdk_client().encrypt(
                source=plaintext,
                encryption_context=self._context,
                materials_manager=_prepared_manager_class()(materials),
                algorithm=_algorithm_suite(),
            )
        return bytes(ciphertext)


@functools.lru_cache(maxsize=1)
def default() -> Crypto:
    """The process-wide `Crypto`, built on first use and reused across warm invocations."""
    return Crypto()


def reset() -> None:
    """Forget the default `Crypto` (tests, after changing the environment)."""
    default.cache_clear()


class _ContextMismatch(Exception):
    """The message's encryption context is not the one the caller expects (K2)."""


class _KmsUnavailable(Exception):
    """Carries a KMS availability error past the SDK, which otherwise swallows decrypt-time KMS errors."""


def _require_key_arn(key_id: str) -> str:
    # A strict provider decrypts only with key ARNs: an alias would encrypt fine and then never decrypt.
    if not (key_id.startswith("arn:") and ":key/" in key_id):
        raise ValueError("the KMS key id (GRANTLINK_KMS_KEY_ID) must be a key ARN, not empty, a bare id or an alias")
    return key_id


def _require_context(context: Mapping[str, str]) -> None:
    if any(not isinstance(context.get(key), str) or not context[key] for key in CONTEXT_KEYS):
        raise ValueError(f"encryption context needs non-empty string values for {', '.join(CONTEXT_KEYS)}")


def _check_context(found: Mapping[str, str], expected: Mapping[str, str]) -> None:
    mismatched = sorted(key for key, value in expected.items() if found.get(key) != value)
    if mismatched:
        raise _ContextMismatch(f"encryption context differs on {', '.join(mismatched)}")


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Turn whatever the SDK, botocore or KMS raised into one domain error, chained to its cause."""
    try:
        yield
    except Exception as exc:
        reason = _kms_unavailable_reason(exc)
        if reason:
            logger.warning("KMS unavailable", extra={"operation": operation, "reason": reason})
            raise errors.ServiceUnavailable() from exc
        logger.warning("crypto failed", extra={"operation": operation, "reason": type(exc).__name__})
        if operation == "decrypt":
            raise errors.CryptoError() from exc
        raise errors.GrantlinkError() from exc


def _kms_unavailable_reason(exc: BaseException) -> str | None:
    """The KMS error code or connection failure anywhere in `exc`'s cause chain, if it is an availability one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (BotocoreConnectionError, HTTPClientError)):
            return type(current).__name__
        if isinstance(current, ClientError):
            code = current.response.get("Error", {}).get("Code", "")
            return code if code in KMS_UNAVAILABLE else None
        current = current.__cause__ or current.__context__
    return None


@functools.cache
def _sdk_client() -> Any:
    import aws_encryption_sdk

    return aws_encryption_sdk.EncryptionSDKClient(
        commitment_policy=aws_encryption_sdk.CommitmentPolicy[COMMITMENT_POLICY], max_encrypted_data_keys=1
    )


@functools.cache
def _algorithm_suite() -> Any:
    from aws_encryption_sdk.identifiers import AlgorithmSuite

    return AlgorithmSuite[ALGORITHM_SUITE]


@functools.cache
def _provider_class() -> type:
    """A strict KMS provider whose master keys let KMS availability errors escape the SDK on decrypt.

    On decrypt the SDK catches each master key's `DecryptKeyError` (which wraps the KMS `ClientError`), tries
    the next key, and finally raises a bare "Unable to decrypt data key" with no cause: a throttled KMS would
    look like a tampered ciphertext. Re-raising availability errors as a non-SDK exception keeps the cause.
    """
    from aws_encryption_sdk import StrictAwsKmsMasterKeyProvider
    from aws_encryption_sdk.key_providers.kms import KMSMasterKey

    class _MasterKey(KMSMasterKey):
        def _decrypt_data_key(self, encrypted_data_key: Any, algorithm: Any, encryption_context: Any = None) -> Any:
            try:
                return super()._decrypt_data_key(encrypted_data_key, algorithm, encryption_context)
            except Exception as exc:
                if _kms_unavailable_reason(exc):
                    raise _KmsUnavailable() from exc
                raise

    class _StrictProvider(StrictAwsKmsMasterKeyProvider):
        master_key_class = _MasterKey

    return _StrictProvider


@functools.cache
def _prepared_manager_class() -> type:
    """A materials manager that hands out materials fetched earlier; it never decrypts."""
    from aws_encryption_sdk.materials_managers.base import CryptoMaterialsManager

    class _Prepared(CryptoMaterialsManager):
        def __init__(self, materials: Any) -> None:
            self._materials = materials

        def get_encryption_materials(self, request: Any) -> Any:
            return self._materials

        def decrypt_materials(self, request: Any) -> Any:
            raise NotImplementedError("prepared materials only encrypt")

    return _Prepared
