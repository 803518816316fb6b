"""Write the test vectors of the field format (FORMAT.md) to vectors.json, next to this file.

    python minnoctl/clients/make_vectors.py          # rewrite vectors.json
    python minnoctl/clients/make_vectors.py --check  # exit 1 if vectors.json is not what this makes

Everything is fixed (master key, data keys, nonces), so the output is the same on every run;
tests/test_clients.py checks that, and runs the Python and the Node client against the file.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from minnoctl import crypto  # noqa: E402

OUT = Path(__file__).with_name("vectors.json")
KEK = crypto.MasterKey(bytes(range(0x80, 0xA0)), "test vectors")
UUID_PK = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"

# (key number, status, data key); 2 is retired: its material is gone, only the number remains
DEKS = [(2, "retired", None), (7, "decrypt_only", bytes(range(32))), (8, "active", bytes(range(0x40, 0x60))),
        (0x01020304, "pending", bytes([0xA5]) * 32)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def nonce(n: int) -> bytes:
    return bytes((n + i) % 256 for i in range(crypto.NONCE_BYTES))


def field_aad(number: int, schema: str, table: str, column: str, pk: str) -> bytes:
    lp = b"".join(struct.pack(">I", len(p.encode())) + p.encode() for p in (schema, table, column, pk))
    return crypto.HEADER.pack(crypto.VERSION, number) + lp


def build() -> dict:
    keys = []
    for i, (number, status, dek) in enumerate(DEKS):
        entry: dict[str, Any] = {"key_number": number, "status": status}
        if dek is None:
            entry |= {"dek": None, "encrypted_key": None}
        else:
            n = nonce(0x10 * (i + 1))
            wrapped = crypto.wrap_dek(KEK, dek, number, nonce=n)
            entry |= {"dek": b64(dek), "wrap_nonce": n.hex(),
                      "wrap_aad": (b"minnoctl dek v1" + struct.pack(">I", number) + KEK.fingerprint.encode()).hex(),
                      "encrypted_key": wrapped}
        keys.append(entry)
    dek_of = {n: d for n, _s, d in DEKS if d is not None}  # the keys that encrypt

    fields = []
    cases = [
        ("uuid primary key, active key", 8, ("minno", "oauth_tokens", "access_token_encrypted", UUID_PK),
         "xoxb-1234567890-known-answer"),
        ("text primary key, decrypt-only key", 7, ("assistant", "user_tokens", "google_access_token", "U024BE7LH"),
         "ya29.a0AfH6SMBx-known-answer"),
        ("empty plaintext", 8, ("assistant", "user_tokens", "slack_refresh_token", "U024BE7LH"), ""),
        ("UTF-8 plaintext and primary key", 8, ("supervisor", "secrets", "encrypted_value", "clé-✓"),
         "pässwörd ✓ 🔑"),
        ("key number above 2^24 (big endian)", 0x01020304,
         ("assistant", "oauth_tokens", "access_token", "sess-1"), "pending keys encrypt nothing; shown for the header"),
    ]
    for i, (name, number, where, plain) in enumerate(cases):
        n = nonce(0xA0 + i)
        value = crypto.encrypt_field(dek_of[number], number, *where, plain, nonce=n)
        entry = {"name": name, "key_number": number, "schema": where[0], "table": where[1], "column": where[2],
                 "pk": where[3], "plaintext": plain, "nonce": n.hex(), "aad": field_aad(number, *where).hex(),
                 "field": value}
        if number == 0x01020304:
            entry["decrypts"] = False  # pending keys are not in the decrypting set
        fields.append(entry)

    good = fields[0]
    good_at = {k: good[k] for k in ("schema", "table", "column", "pk")}
    good_where: tuple[str, str, str, object] = tuple(good_at.values())
    raw = base64.b64decode(good["field"])

    def negative(name, error, field=good["field"], **changes):
        return {"name": name, **good_at, **changes, "field": field, "error": error}

    flipped = bytearray(raw)
    flipped[-20] ^= 0x01  # a ciphertext byte
    tag = bytearray(raw)
    tag[-1] ^= 0x80
    renumbered = bytearray(raw)
    renumbered[1:5] = struct.pack(">I", 7)  # another known key: the header is authenticated
    v2 = bytearray(raw)
    v2[0] = 2
    unknown = crypto.encrypt_field(bytes(32), 99, *good_where, "under key 99", nonce=nonce(0xC0))
    retired = crypto.encrypt_field(bytes(range(0x20, 0x40)), 2, *good_where, "under retired key 2",
                                   nonce=nonce(0xC1))
    negatives = [
        negative("wrong column", "FIELD_AUTH", column="refresh_token_encrypted"),
        negative("wrong primary key", "FIELD_AUTH", pk="6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4c"),
        negative("wrong table", "FIELD_AUTH", table="user_tokens"),
        negative("wrong schema", "FIELD_AUTH", schema="assistant"),
        negative("same bytes, other split of column and pk", "FIELD_AUTH", column="access_token_encrypte",
                 pk="d" + good["pk"]),
        negative("tampered ciphertext byte", "FIELD_AUTH", b64(bytes(flipped))),
        negative("tampered tag", "FIELD_AUTH", b64(bytes(tag))),
        negative("header renumbered to another known key", "FIELD_AUTH", b64(bytes(renumbered))),
        negative("unknown key number", "KEY_UNKNOWN", unknown),
        negative("retired key", "KEY_UNKNOWN", retired),
        negative("bad version", "FIELD_VERSION", b64(bytes(v2))),
        negative("truncated below header + nonce + tag", "FIELD_MALFORMED", b64(raw[:crypto.MIN_FIELD_BYTES - 1])),
        negative("plaintext token", "FIELD_MALFORMED", "ya29.a0AfH6SMBx-this-is-not-a-field"),
        negative("base64 without its padding", "FIELD_MALFORMED", good["field"].rstrip("=")),
        negative("base64 with a line break", "FIELD_MALFORMED", good["field"][:20] + "\n" + good["field"][20:]),
        negative("URL-safe base64 alphabet", "FIELD_MALFORMED",
                 base64.urlsafe_b64encode(bytes([1, 0, 0, 0, 8]) + bytes([0xFB, 0xFF] * 20)).decode()),
    ]
    other = crypto.MasterKey(bytes(range(0xA0, 0xC0)), "other")
    return {
        "description": "Test vectors of minnoctl's encrypted-field format, version 1 (minnoctl/clients/FORMAT.md). "
                       "Binary values are base64 (keys, fields) or hex (nonces, associated data). Made by "
                       "minnoctl/clients/make_vectors.py; do not edit by hand.",
        "master_key": b64(KEK.key),
        "kek_fingerprint": KEK.fingerprint,
        "keys": keys,
        "fields": fields,
        "negative_fields": negatives,
        "negative_keys": [
            {"name": "wrapped key presented under another key number", "key_number": 9,
             "encrypted_key": keys[2]["encrypted_key"], "error": "WRONG_MASTER_KEY"},
            {"name": "another master key", "master_key": b64(other.key), "key_number": 8,
             "encrypted_key": keys[2]["encrypted_key"], "error": "WRONG_MASTER_KEY"},
        ],
        "negative_master_keys": [
            {"name": "31 bytes", "master_key": b64(bytes(31)), "error": "MASTER_KEY_INVALID"},
            {"name": "not base64", "master_key": "not a key!", "error": "MASTER_KEY_INVALID"},
            {"name": "hex instead of base64", "master_key": bytes(32).hex(), "error": "MASTER_KEY_INVALID"},
        ],
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    text = render()
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT} is out of date — run python {Path(__file__).name}")
    else:
        OUT.write_text(text, encoding="utf-8")
