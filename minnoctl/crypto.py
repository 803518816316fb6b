"""Envelope encryption of token and secret columns: the field format and the keys.

A master key (KEK, 32 bytes, base64 in MINNO_MASTER_KEY or in the file MINNO_MASTER_KEY_FILE)
wraps data keys (DEKs) with AES-256-GCM; the wrapped DEKs live in minno.encryption_keys. A field
is encrypted with a DEK:

    field  = base64( version (1 byte, 0x01) || key number (4 bytes, big endian)
                     || nonce (12 random bytes) || AES-256-GCM ciphertext with its 16-byte tag )
    AAD    = version || key number || len-prefixed schema, table, column, primary key

so a ciphertext copied to another row, column or table does not decrypt, and decryption picks its
key by the number in the header: an unknown or destroyed key is an explicit error, never a trial of
every key. The format is specified, with test vectors, in minnoctl/clients/FORMAT.md.

Applications use this module without the rest of minnoctl (it imports neither the CLI nor psycopg):

    from minnoctl import crypto
    ring = crypto.load_keyring(conn, os.environ["MINNO_MASTER_KEY"])   # a psycopg 3 connection
    field = ring.encrypt("assistant", "user_tokens", "google_access_token", user_id, token)
    token = ring.decrypt_text("assistant", "user_tokens", "google_access_token", user_id, field)

Every error is a CryptoError with a `code` (FORMAT.md, "Errors"); on the database guard's SQLSTATE
MK001 (a key retired since the keyring was loaded) load the keyring again and write again.

Nothing here prints or logs key material, and error messages never contain plaintext, keys or
ciphertext.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping

from minnoctl.errors import ExitCode, MinnoctlError

VERSION = 1
HEADER = struct.Struct(">BI")  # version, key number
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32
MIN_FIELD_BYTES = HEADER.size + NONCE_BYTES + TAG_BYTES
MASTER_KEY_ENV = "MINNO_MASTER_KEY"
MASTER_KEY_FILE_ENV = "MINNO_MASTER_KEY_FILE"
DEV_KEY_FILE = "master.key"
_DEK_WRAP_LABEL = b"minnoctl dek v1"
_FINGERPRINT_LABEL = b"minnoctl kek fingerprint v1"


class CryptoError(MinnoctlError):
    """A key or an encrypted field cannot be used; the message says which, never what it holds.
    `code` names the error as FORMAT.md and the Node client do (FIELD_AUTH, KEY_UNKNOWN, ...)."""

    exit_code = ExitCode.CRYPTO
    code = "CRYPTO"

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class MasterKeyError(CryptoError):
    """The master key is missing, malformed, or not the one that wrapped the data keys."""

    exit_code = ExitCode.CRYPTO
    code = "MASTER_KEY_INVALID"


class FieldError(CryptoError):
    """One encrypted field is damaged, moved, or uses a key that is unknown or destroyed."""

    code = "FIELD_MALFORMED"


# ---------------------------------------------------------------------------------------------
# Master key


def parse_master_key(text: str, origin: str) -> bytes:
    """Strict: standard base64 of exactly 32 bytes. The message never echoes the value."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{origin} is not valid base64 — make a key with `minnoctl token keygen`") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{origin} holds {len(key)} bytes, not {KEY_BYTES} — make a key with "
                             "`minnoctl token keygen`")
    return key


def generate_key() -> bytes:
    return os.urandom(KEY_BYTES)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def fingerprint(kek: bytes) -> str:
    """A public name for a master key (16 hex digits): an HMAC, so it reveals nothing of the key."""
    return hmac.new(kek, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class MasterKey:
    key: bytes
    source: str  # MINNO_MASTER_KEY, MINNO_MASTER_KEY_FILE (path), or the development key file

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.key)

    def __repr__(self) -> str:  # never show the key, even in a debugger or a traceback
        return f"MasterKey(fingerprint={self.fingerprint}, source={self.source!r})"


def load_master_key(env: Mapping[str, str] | None = None, *, embedded: bool = False,
                    minno_home: Path | None = None, new: bool = False) -> MasterKey:
    """The master key from the environment, or the file it names. With the embedded database only,
    a development key is created under MINNO_HOME (mode 0600) on first use. `new` reads
    MINNO_NEW_MASTER_KEY / _FILE instead (for `token rotate --master`). The variables are read
    from the environment, else the .env file (config.environment)."""
    from minnoctl.config import environment

    env = environment(env)
    name = "MINNO_NEW_MASTER_KEY" if new else MASTER_KEY_ENV
    file_name = f"{name}_FILE"
    if name in env:
        if not env[name].strip():
            raise MasterKeyError(f"{name} is set but empty — put the base64 key from `minnoctl token keygen` "
                                 "in it, or unset it")
        return MasterKey(parse_master_key(env[name], name), name)
    if env.get(file_name):
        path = Path(env[file_name]).expanduser()
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise MasterKeyError(f"{file_name}: cannot read {path} ({exc.__class__.__name__}) — fix the path "
                                 "or its permissions") from None
        _warn_if_others_can_read(path, file_name)
        return MasterKey(parse_master_key(text, f"{file_name} ({path})"), f"{file_name} ({path})")
    if new:
        raise MasterKeyError(f"no new master key: set {name} or {file_name} (make one with `minnoctl token keygen`)")
    if not embedded or minno_home is None:
        raise MasterKeyError(f"no master key: set {MASTER_KEY_ENV} (base64 of 32 bytes, from `minnoctl token "
                             f"keygen`) or {MASTER_KEY_FILE_ENV}; only the embedded database gets a development key")
    return _development_key(Path(minno_home))


def _development_key(home: Path) -> MasterKey:
    import logging

    path = home / DEV_KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = None  # another process made it first
        if fd is not None:
            with os.fdopen(fd, "w") as fh:
                fh.write(encode_key(generate_key()) + "\n")
            logging.getLogger("minnoctl").warning(
                "created a development master key in %s (embedded database only; set %s for a real one)",
                path, MASTER_KEY_ENV)
    _warn_if_others_can_read(path, "the development master key")
    return MasterKey(parse_master_key(path.read_text(encoding="ascii"), str(path)), str(path))


def _warn_if_others_can_read(path: Path, origin: str) -> None:
    """One warning when a master key file grants its group or others any access (what ssh checks for
    a private key). A warning, not a refusal as in ssh: Kubernetes secret volumes (0644) and Docker
    secrets (0444) mount key files that way by default, in containers where nobody else lives."""
    import logging
    import stat

    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        from minnoctl.render_text import shown

        where = shown(path, limit=1000)
        logging.getLogger("minnoctl").warning("%s %s can be read or changed by other users (mode %04o) — run "
                                              "`chmod 600 %s`", origin, where, mode, where)


# ---------------------------------------------------------------------------------------------
# Data keys, wrapped by the master key


@functools.lru_cache(maxsize=64)
def _aesgcm(key: bytes):
    """One cipher object per key (building one costs more than encrypting a token with it)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _wrap_aad(key_number: int, kek_fingerprint: str) -> bytes:
    return _DEK_WRAP_LABEL + struct.pack(">I", key_number) + kek_fingerprint.encode("ascii")


def wrap_dek(kek: MasterKey, dek: bytes, key_number: int, *, nonce: bytes | None = None) -> str:
    """base64(nonce || AES-256-GCM(kek, dek)), bound to the DEK's number and the KEK's fingerprint.
    `nonce` is for test vectors only."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    sealed = _aesgcm(kek.key).encrypt(nonce, dek, _wrap_aad(key_number, kek.fingerprint))
    return base64.b64encode(nonce + sealed).decode("ascii")


def unwrap_dek(kek: MasterKey, wrapped: str, key_number: int) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.b64decode(wrapped, validate=True)
        dek = _aesgcm(kek.key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                       _wrap_aad(key_number, kek.fingerprint))
    except (InvalidTag, binascii.Error, ValueError):
        raise MasterKeyError(
            f"data key {key_number} cannot be unwrapped with the master key from {kek.source} (fingerprint "
            f"{kek.fingerprint}): it is not the master key that wrapped it; nothing was changed",
            code="WRONG_MASTER_KEY") from None
    if len(dek) != KEY_BYTES:
        raise MasterKeyError(f"data key {key_number} is not {KEY_BYTES} bytes once unwrapped", code="KEYRING_INVALID")
    return dek


# ---------------------------------------------------------------------------------------------
# Fields


def _lp(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">I", len(data)) + data  # length-prefixed: no two rows share an AAD


@functools.lru_cache(maxsize=256)
def _where(schema: str, table: str, column: str) -> bytes:
    return _lp(schema) + _lp(table) + _lp(column)


def _field_aad(header: bytes, schema: str, table: str, column: str, pk: object) -> bytes:
    return header + _where(schema, table, column) + _lp(str(pk))


def encrypt_field(dek: bytes, key_number: int, schema: str, table: str, column: str, pk: object,
                  plaintext: str | bytes, *, nonce: bytes | None = None) -> str:
    """Encrypt one field for (schema, table, column, primary key). `nonce` is for known-answer
    tests only; leave it out."""
    data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
    header = HEADER.pack(VERSION, key_number)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 12 bytes")
    sealed = _aesgcm(dek).encrypt(nonce, data, _field_aad(header, schema, table, column, pk))
    return base64.b64encode(header + nonce + sealed).decode("ascii")


_STRICT_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def field_key_number(value: str) -> int:
    """The key number in a field's header, without decrypting it. The base64 is strict (the
    standard alphabet, padded, no whitespace), as the database guard's check (minno/0007)."""
    try:
        if not isinstance(value, str) or not _STRICT_BASE64.fullmatch(value):
            raise ValueError
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FieldError("not an encrypted field (invalid base64)") from None
    if len(raw) < MIN_FIELD_BYTES:
        raise FieldError(f"encrypted field is truncated ({len(raw)} bytes)")
    version, number = HEADER.unpack_from(raw)
    if version != VERSION:
        raise FieldError(f"unknown encrypted-field version {version}", code="FIELD_VERSION")
    return number


def decrypt_field(keys: Mapping[int, bytes], schema: str, table: str, column: str, pk: object,
                  value: str) -> bytes:
    """Decrypt a field with the key its header names. Raises FieldError for a damaged or moved
    field and for a key that is unknown or destroyed."""
    from cryptography.exceptions import InvalidTag

    number = field_key_number(value)
    raw = base64.b64decode(value, validate=True)
    dek = keys.get(number)
    if dek is None:
        raise FieldError(f"data key {number} is unknown or destroyed", code="KEY_UNKNOWN")
    header, nonce, sealed = (raw[:HEADER.size], raw[HEADER.size:HEADER.size + NONCE_BYTES],
                             raw[HEADER.size + NONCE_BYTES:])
    try:
        return _aesgcm(dek).decrypt(nonce, sealed, _field_aad(header, schema, table, column, pk))
    except InvalidTag:
        raise FieldError("the field does not authenticate: damaged, or copied from another row or column",
                         code="FIELD_AUTH") from None


# ---------------------------------------------------------------------------------------------
# The keyring in the database


@dataclass
class DataKey:
    id: str  # the row's UUID
    number: int  # the 4-byte id in every field header
    status: str  # pending | active | decrypt_only | retired
    key: bytes | None  # None once retired (destroyed)

    def __repr__(self) -> str:
        return f"DataKey(number={self.number}, status={self.status!r})"


class Keyring:
    """The unwrapped data keys of a database. Load it with Keyring.load(conn, master_key)."""

    def __init__(self, keys: list[DataKey]):
        self.keys = {k.number: k for k in keys}

    @classmethod
    def load(cls, conn, kek: MasterKey) -> "Keyring":
        """Unwrap every live key. A wrong master key fails here, before anything changes."""
        rows = conn.execute(
            "SELECT id::text, key_number, status, encrypted_key, kek_fingerprint FROM minno.encryption_keys "
            "ORDER BY key_number").fetchall()
        keys = []
        for key_id, number, status, wrapped, fp in rows:
            if status == "retired" or wrapped is None:
                keys.append(DataKey(key_id, number, status, None))
                continue
            if fp and fp != kek.fingerprint:
                raise _other_master(fp, kek)
            keys.append(DataKey(key_id, number, status, unwrap_dek(kek, wrapped, number)))
        return cls(keys)

    @property
    def active(self) -> DataKey | None:
        return next((k for k in self.keys.values() if k.status == "active"), None)

    def active_number(self) -> int:
        """The active key's number, of a ring that has one (after ensure_active_key or a rotation's switch)."""
        key = self.active
        if key is None:
            raise CryptoError("there is no active data key — run `minnoctl token rotate` to create one",
                              code="NO_ACTIVE_KEY")
        return key.number

    def decrypting(self) -> dict[int, bytes]:
        return {n: k.key for n, k in self.keys.items() if k.key is not None and k.status != "pending"}

    def encrypt(self, schema: str, table: str, column: str, pk: object, plaintext: str | bytes) -> str:
        key = self.active
        if key is None or key.key is None:
            raise CryptoError("there is no active data key — run `minnoctl token rotate` to create one",
                              code="NO_ACTIVE_KEY")
        return encrypt_field(key.key, key.number, schema, table, column, pk, plaintext)

    def decrypt(self, schema: str, table: str, column: str, pk: object, value: str) -> bytes:
        return decrypt_field(self.decrypting(), schema, table, column, pk, value)

    def decrypt_text(self, schema: str, table: str, column: str, pk: object, value: str) -> str:
        """decrypt(), as UTF-8 text (what the applications store: tokens)."""
        plain = self.decrypt(schema, table, column, pk, value)
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise FieldError("the decrypted field is not UTF-8 text — use decrypt()", code="FIELD_NOT_UTF8") from None

    @property
    def active_key_number(self) -> int | None:
        return self.active.number if self.active else None

    @staticmethod
    def key_number(value: str) -> int:
        return field_key_number(value)


def load_keyring(conn, master_key: "MasterKey | str | bytes") -> Keyring:
    """The app-facing entry point: the keyring of the database behind a psycopg 3 connection,
    unwrapped with the master key (a MasterKey, its base64 text as in MINNO_MASTER_KEY, or its 32
    raw bytes). Needs SELECT on minno.encryption_keys only."""
    if isinstance(master_key, str):
        master_key = MasterKey(parse_master_key(master_key, "the master key"), "the master key")
    elif isinstance(master_key, (bytes, bytearray)):
        if len(master_key) != KEY_BYTES:
            raise MasterKeyError(f"the master key holds {len(master_key)} bytes, not {KEY_BYTES}")
        master_key = MasterKey(bytes(master_key), "the master key")
    return Keyring.load(conn, master_key)


def _other_master(fp: str, kek: MasterKey) -> MasterKeyError:
    return MasterKeyError(f"the data keys are wrapped by master key {fp}, but {kek.source} is {kek.fingerprint}; "
                          "nothing was changed — use the master key they were made with", code="WRONG_MASTER_KEY")


def lock_keyring(conn) -> None:
    """Keep every other writer of the keyring out until the transaction ends (a SHARE ROW
    EXCLUSIVE lock: it conflicts with itself and with INSERT/UPDATE, not with readers nor with the
    guard trigger's FOR SHARE)."""
    conn.execute("LOCK TABLE minno.encryption_keys IN SHARE ROW EXCLUSIVE MODE")


def create_data_key(conn, kek: MasterKey, *, name: str, status: str) -> DataKey:
    """Insert a new wrapped DEK. Its number comes from the table's identity, and the wrap binds it,
    so the row is inserted first and its wrapped key written in the same transaction. Refused when
    the live keys are under another master key (a re-wrap committed since `kek` was loaded), so the
    keyring is never under two master keys."""
    dek = generate_key()
    with conn.transaction():
        lock_keyring(conn)
        other = conn.execute("SELECT kek_fingerprint FROM minno.encryption_keys WHERE encrypted_key IS NOT NULL "
                             "AND kek_fingerprint <> %s LIMIT 1", (kek.fingerprint,)).fetchone()
        if other:
            raise _other_master(other[0], kek)
        key_id, number = conn.execute(
            "INSERT INTO minno.encryption_keys (key_name, encrypted_key, status, kek_fingerprint) "
            "VALUES (%s, 'pending-wrap', %s, %s) RETURNING id::text, key_number",
            (name, status, kek.fingerprint)).fetchone()
        conn.execute("UPDATE minno.encryption_keys SET encrypted_key = %s WHERE id = %s",
                     (wrap_dek(kek, dek, number), key_id))
    return DataKey(key_id, number, status, dek)
