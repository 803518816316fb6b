"""minnoctl.crypto: the field format's properties, the master key, and the keyring in a real
database. Each test states a property that must hold."""

from __future__ import annotations

import base64
import os
import stat

import psycopg
import pytest

from minnoctl import crypto
from minnoctl.crypto import FieldError, Keyring, MasterKey, MasterKeyError

DEK = bytes(range(32))
PK = "00000000-0000-0000-0000-000000000001"
WHERE = ("minno", "oauth_tokens", "access_token_encrypted", PK)
# AES-256-GCM, key 00..1f, nonce 00..0b, key number 7, the AAD above, plaintext "xoxb-known-answer";
# checked against an independent construction from the raw AESGCM primitive when it was recorded.
GOLDEN = "AQAAAAcAAQIDBAUGBwgJCgs/ba556I6sdPovuurfmg8I8ZBgdwKJYzWj5CN0pu0axQk="


def test_known_answer():
    assert crypto.encrypt_field(DEK, 7, *WHERE, "xoxb-known-answer", nonce=bytes(range(12))) == GOLDEN
    assert crypto.decrypt_field({7: DEK}, *WHERE, GOLDEN) == b"xoxb-known-answer"


def test_every_single_bit_flip_is_rejected():
    raw = base64.b64decode(GOLDEN)
    for i in range(len(raw) * 8):
        flipped = bytearray(raw)
        flipped[i // 8] ^= 1 << (i % 8)
        with pytest.raises(FieldError):
            crypto.decrypt_field({7: DEK}, *WHERE, base64.b64encode(bytes(flipped)).decode())


def test_every_truncation_is_rejected():
    raw = base64.b64decode(GOLDEN)
    for length in range(len(raw)):
        with pytest.raises(FieldError):
            crypto.decrypt_field({7: DEK}, *WHERE, base64.b64encode(raw[:length]).decode())
    for cut in range(1, len(GOLDEN)):  # cut base64 text too
        with pytest.raises(FieldError):
            crypto.decrypt_field({7: DEK}, *WHERE, GOLDEN[:cut])


@pytest.mark.parametrize("moved", [
    ("minno", "oauth_tokens", "access_token_encrypted", "00000000-0000-0000-0000-000000000002"),  # other row
    ("minno", "oauth_tokens", "refresh_token_encrypted", PK),  # other column
    ("assistant", "oauth_tokens", "access_token_encrypted", PK),  # other schema
    ("minno", "user_tokens", "access_token_encrypted", PK),  # other table
    ("minno", "oauth_tokens", "access_token_encrypte", "d" + PK),  # same bytes, other split
])
def test_a_ciphertext_moved_elsewhere_does_not_decrypt(moved):
    with pytest.raises(FieldError, match="does not authenticate"):
        crypto.decrypt_field({7: DEK}, *moved, GOLDEN)


def test_an_unknown_or_destroyed_key_is_an_explicit_error_not_a_trial():
    other = os.urandom(32)
    with pytest.raises(FieldError, match="data key 7 is unknown or destroyed"):
        crypto.decrypt_field({8: DEK, 9: other}, *WHERE, GOLDEN)


def test_twenty_thousand_encryptions_give_twenty_thousand_nonces():
    nonces = {base64.b64decode(crypto.encrypt_field(DEK, 1, *WHERE, "same plaintext"))[5:17] for _ in range(20_000)}
    assert len(nonces) == 20_000


def test_the_header_carries_the_key_number():
    assert crypto.field_key_number(GOLDEN) == 7
    for bad in ("", "not base64!", base64.b64encode(b"\x02" + bytes(40)).decode()):
        with pytest.raises(FieldError):
            crypto.field_key_number(bad)


@pytest.mark.parametrize("value, phrase", [
    ("", "set but empty"),
    ("  ", "set but empty"),
    ("not-base64!!", "not valid base64"),
    (base64.b64encode(bytes(16)).decode(), "16 bytes, not 32"),
    (base64.b64encode(bytes(33)).decode(), "33 bytes, not 32"),
    (base64.urlsafe_b64encode(b"\xfb" * 32).decode(), "not valid base64"),  # strict: standard alphabet
])
def test_master_key_is_strictly_validated_and_never_echoed(value, phrase):
    with pytest.raises(MasterKeyError) as info:
        crypto.load_master_key({"MINNO_MASTER_KEY": value})
    assert phrase in str(info.value)
    if value.strip():
        assert value not in str(info.value)


def test_master_key_from_a_file_and_missing_key_messages(tmp_path):
    key = crypto.generate_key()
    path = tmp_path / "kek"
    path.write_text(crypto.encode_key(key) + "\n")
    loaded = crypto.load_master_key({"MINNO_MASTER_KEY_FILE": str(path)})
    assert loaded.key == key and "MINNO_MASTER_KEY_FILE" in loaded.source
    assert crypto.encode_key(key) not in repr(loaded)
    with pytest.raises(MasterKeyError, match="set MINNO_MASTER_KEY"):
        crypto.load_master_key({})  # a configured server never gets a development key
    with pytest.raises(MasterKeyError, match="cannot read"):
        crypto.load_master_key({"MINNO_MASTER_KEY_FILE": str(tmp_path / "nope")})


def test_the_embedded_database_gets_a_private_development_key_once(tmp_path):
    first = crypto.load_master_key({}, embedded=True, minno_home=tmp_path)
    path = tmp_path / crypto.DEV_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = crypto.load_master_key({}, embedded=True, minno_home=tmp_path)
    assert again.key == first.key
    # an explicit key always wins over the development key
    explicit = crypto.encode_key(crypto.generate_key())
    assert crypto.load_master_key({"MINNO_MASTER_KEY": explicit}, embedded=True, minno_home=tmp_path).key != first.key


def _kek() -> MasterKey:
    return MasterKey(crypto.generate_key(), "test")


def test_keyring_in_the_database_and_raw_sql_never_shows_plaintext(migrated):
    kek = _kek()
    plaintext = "xoxb-super-secret-bot-token-1234567890"
    with psycopg.connect(migrated, autocommit=True) as conn:
        key = crypto.create_data_key(conn, kek, name="test-1", status="active")
        ring = Keyring.load(conn, kek)
        assert ring.active.number == key.number
        ws = conn.execute("INSERT INTO minno.workspaces (slack_team_id, slack_team_name) VALUES ('T1', 'one') "
                          "RETURNING id").fetchone()[0]
        token_id = conn.execute("SELECT gen_random_uuid()").fetchone()[0]  # the row's id is in the field's AAD
        field = ring.encrypt("minno", "oauth_tokens", "access_token_encrypted", token_id, plaintext)
        conn.execute("INSERT INTO minno.oauth_tokens (id, workspace_id, provider, access_token_encrypted) "
                     "VALUES (%s, %s, 'slack', %s)", (token_id, ws, field))
        dump = conn.execute("SELECT t::text FROM minno.oauth_tokens t").fetchone()[0]
        keys_dump = conn.execute("SELECT k::text FROM minno.encryption_keys k").fetchone()[0]
        assert plaintext not in dump and plaintext.encode().hex() not in dump
        assert crypto.encode_key(key.key) not in keys_dump and key.key.hex() not in keys_dump
        assert Keyring.load(conn, kek).decrypt("minno", "oauth_tokens", "access_token_encrypted", token_id,
                                               field) == plaintext.encode()
        is_active = conn.execute("SELECT is_active FROM minno.encryption_keys WHERE key_number = %s",
                                 (key.number,)).fetchone()[0]
        assert is_active is True


def test_a_wrong_master_key_cannot_load_the_keyring_and_changes_nothing(migrated):
    kek = _kek()
    with psycopg.connect(migrated, autocommit=True) as conn:
        crypto.create_data_key(conn, kek, name="k", status="active")
        before = conn.execute("SELECT encrypted_key, kek_fingerprint FROM minno.encryption_keys").fetchall()
        with pytest.raises(MasterKeyError, match="wrapped by master key"):
            Keyring.load(conn, _kek())
        # same fingerprint column forged away: the wrap itself still refuses the wrong key
        conn.execute("UPDATE minno.encryption_keys SET kek_fingerprint = NULL")
        with pytest.raises(MasterKeyError, match="cannot be unwrapped"):
            Keyring.load(conn, _kek())
        after = conn.execute("SELECT encrypted_key FROM minno.encryption_keys").fetchall()
        assert [r[0] for r in after] == [r[0] for r in before]


def test_a_wrapped_data_key_is_bound_to_its_number(migrated):
    kek = _kek()
    with psycopg.connect(migrated, autocommit=True) as conn:
        a = crypto.create_data_key(conn, kek, name="a", status="active")
        b = crypto.create_data_key(conn, kek, name="b", status="pending")
        # swap the wrapped keys between rows: neither unwraps under the other's number
        conn.execute("UPDATE minno.encryption_keys SET encrypted_key = CASE key_number "
                     "WHEN %s THEN (SELECT encrypted_key FROM minno.encryption_keys WHERE key_number = %s) "
                     "ELSE (SELECT encrypted_key FROM minno.encryption_keys WHERE key_number = %s) END",
                     (a.number, b.number, a.number))
        with pytest.raises(MasterKeyError, match="cannot be unwrapped"):
            Keyring.load(conn, kek)


def test_at_most_one_active_key_and_retired_keys_hold_no_material(migrated):
    kek = _kek()
    with psycopg.connect(migrated, autocommit=True) as conn:
        crypto.create_data_key(conn, kek, name="a", status="active")
        with pytest.raises(psycopg.errors.UniqueViolation):
            crypto.create_data_key(conn, kek, name="b", status="active")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE minno.encryption_keys SET status = 'retired'")  # key material still there
