'use strict';
/**
 * minno-fields: read and write minnoctl's encrypted token and secret columns from Node.
 *
 * The format is specified in ../FORMAT.md and checked against ../vectors.json. This file has no
 * dependency beyond node:crypto and runs on Node 18 and later. It is CommonJS, so both work:
 *
 *   const fields = require('./minno-fields.cjs');
 *   import { loadKeyring, parseMasterKey } from './minno-fields.cjs';
 *
 * Usage with node-postgres:
 *
 *   const masterKey = parseMasterKey(process.env.MINNO_MASTER_KEY);
 *   const ring = await loadKeyring(pool, masterKey);
 *   const field = ring.encrypt('assistant', 'user_tokens', 'google_access_token', userId, token);
 *   const token = ring.decrypt('assistant', 'user_tokens', 'google_access_token', userId, field);
 *
 * No error message contains a key, a token or a ciphertext.
 */

const crypto = require('node:crypto');

const VERSION = 1;
const HEADER_BYTES = 5; // version (1 byte) || key number (4 bytes, big endian)
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const MIN_FIELD_BYTES = HEADER_BYTES + NONCE_BYTES + TAG_BYTES;
const DEK_WRAP_LABEL = Buffer.from('minnoctl dek v1', 'ascii');
const FINGERPRINT_LABEL = Buffer.from('minnoctl kek fingerprint v1', 'ascii');
/** SQLSTATE of the database guard: a field under a retired, fenced or unknown key (reload the keyring). */
const SQLSTATE_STALE_KEY = 'MK001';
/** SQLSTATE of the database guard: a value that is not an encrypted field (plaintext) was refused. */
const SQLSTATE_NOT_A_FIELD = 'MK002';
const KEYRING_SQL = 'SELECT key_number, status, encrypted_key, kek_fingerprint FROM minno.encryption_keys ' +
  'ORDER BY key_number';

const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** The base class of every error of this module; `code` says which (see FORMAT.md, "Errors"). */
class MinnoFieldsError extends Error {
  constructor(code, message) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
/** The master key is malformed (MASTER_KEY_INVALID) or not the one that wrapped the data keys (WRONG_MASTER_KEY). */
class MasterKeyError extends MinnoFieldsError {}
/** One field cannot be used: FIELD_MALFORMED, FIELD_VERSION, KEY_UNKNOWN, FIELD_AUTH, FIELD_NOT_UTF8. */
class FieldError extends MinnoFieldsError {}
/** The keyring cannot be used: NO_ACTIVE_KEY, KEYRING_INVALID. */
class KeyringError extends MinnoFieldsError {}

function strictBase64(text) {
  if (typeof text !== 'string' || text.length % 4 !== 0 || !STRICT_BASE64.test(text)) return null;
  return Buffer.from(text, 'base64');
}

/** The master key (KEK) from its base64 text (MINNO_MASTER_KEY): exactly 32 bytes, strict base64. */
function parseMasterKey(text) {
  const raw = typeof text === 'string' ? strictBase64(text.trim()) : null;
  if (raw === null) {
    throw new MasterKeyError('MASTER_KEY_INVALID', 'the master key is not valid base64 — use the key from ' +
      '`minnoctl token keygen`');
  }
  if (raw.length !== KEY_BYTES) {
    throw new MasterKeyError('MASTER_KEY_INVALID', `the master key holds ${raw.length} bytes, not ${KEY_BYTES}`);
  }
  return raw;
}

/** The public name of a master key: the first 16 hex digits of HMAC-SHA256(kek, label). */
function fingerprint(kek) {
  return crypto.createHmac('sha256', kek).update(FINGERPRINT_LABEL).digest('hex').slice(0, 16);
}

function u32(n) {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError('key number must be a 32-bit unsigned integer');
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n, 0);
  return b;
}

function seal(key, nonce, plaintext, aad) {
  const cipher = crypto.createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

function open(key, nonce, sealed, aad) {
  if (sealed.length < TAG_BYTES) return null;
  const decipher = crypto.createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG_BYTES)), decipher.final()]);
  } catch (e) {
    return null;
  }
}

function wrapAad(keyNumber, kekFingerprint) {
  return Buffer.concat([DEK_WRAP_LABEL, u32(keyNumber), Buffer.from(kekFingerprint, 'ascii')]);
}

/** Wrap a data key: base64(nonce || AES-256-GCM(kek, dek, aad = label || key number || fingerprint)). */
function wrapDek(kek, dek, keyNumber, options = {}) {
  const nonce = options.nonce || crypto.randomBytes(NONCE_BYTES);
  if (nonce.length !== NONCE_BYTES) throw new RangeError('nonce must be 12 bytes');
  return Buffer.concat([nonce, seal(kek, nonce, dek, wrapAad(keyNumber, fingerprint(kek)))]).toString('base64');
}

/** Unwrap a data key from minno.encryption_keys.encrypted_key; WRONG_MASTER_KEY if it does not open. */
function unwrapDek(kek, wrapped, keyNumber) {
  const raw = strictBase64(wrapped);
  const dek = raw && raw.length > NONCE_BYTES
    ? open(kek, raw.subarray(0, NONCE_BYTES), raw.subarray(NONCE_BYTES), wrapAad(keyNumber, fingerprint(kek)))
    : null;
  if (dek === null) {
    throw new MasterKeyError('WRONG_MASTER_KEY', `data key ${keyNumber} cannot be unwrapped with this master key ` +
      `(fingerprint ${fingerprint(kek)}): it is not the master key that wrapped it`);
  }
  if (dek.length !== KEY_BYTES) {
    throw new KeyringError('KEYRING_INVALID', `data key ${keyNumber} is not ${KEY_BYTES} bytes once unwrapped`);
  }
  return dek;
}

function lp(text) {
  const data = Buffer.from(String(text), 'utf8');
  return Buffer.concat([u32(data.length), data]);
}

function fieldAad(header, schema, table, column, pk) {
  return Buffer.concat([header, lp(schema), lp(table), lp(column), lp(pk)]);
}

function header(keyNumber) {
  return Buffer.concat([Buffer.from([VERSION]), u32(keyNumber)]);
}

function toBytes(plaintext) {
  if (typeof plaintext === 'string') return Buffer.from(plaintext, 'utf8');
  if (plaintext instanceof Uint8Array) return Buffer.from(plaintext);
  throw new TypeError('plaintext must be a string, a Buffer or a Uint8Array');
}

/**
 * Encrypt one field for (schema, table, column, primary key) with a data key. `pk` is the primary
 * key as PostgreSQL prints it (pk::text). `options.nonce` is for test vectors only.
 */
function encryptField(dek, keyNumber, schema, table, column, pk, plaintext, options = {}) {
  const nonce = options.nonce || crypto.randomBytes(NONCE_BYTES);
  if (nonce.length !== NONCE_BYTES) throw new RangeError('nonce must be 12 bytes');
  const head = header(keyNumber);
  const sealed = seal(dek, nonce, toBytes(plaintext), fieldAad(head, schema, table, column, pk));
  return Buffer.concat([head, nonce, sealed]).toString('base64');
}

function parseField(field) {
  const raw = strictBase64(field);
  if (raw === null) throw new FieldError('FIELD_MALFORMED', 'not an encrypted field (invalid base64)');
  if (raw.length < MIN_FIELD_BYTES) {
    throw new FieldError('FIELD_MALFORMED', `encrypted field is truncated (${raw.length} bytes)`);
  }
  if (raw[0] !== VERSION) throw new FieldError('FIELD_VERSION', `unknown encrypted-field version ${raw[0]}`);
  return raw;
}

/** The key number in a field's header, without decrypting it. */
function fieldKeyNumber(field) {
  return parseField(field).readUInt32BE(1);
}

/**
 * Decrypt one field with the key its header names; `keys` maps key numbers to data keys (a Map or
 * an object). Returns a Buffer.
 */
function decryptFieldBytes(keys, schema, table, column, pk, field) {
  const raw = parseField(field);
  const number = raw.readUInt32BE(1);
  const dek = keys instanceof Map ? keys.get(number) : keys[number];
  if (!dek) throw new FieldError('KEY_UNKNOWN', `data key ${number} is unknown or destroyed`);
  const head = raw.subarray(0, HEADER_BYTES);
  const plain = open(dek, raw.subarray(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES), raw.subarray(HEADER_BYTES + NONCE_BYTES),
    fieldAad(head, schema, table, column, pk));
  if (plain === null) {
    throw new FieldError('FIELD_AUTH', 'the field does not authenticate: damaged, or copied from another row or column');
  }
  return plain;
}

/** decryptFieldBytes, as a UTF-8 string (FIELD_NOT_UTF8 if it is not valid UTF-8). */
function decryptField(keys, schema, table, column, pk, field) {
  const plain = decryptFieldBytes(keys, schema, table, column, pk, field);
  try {
    return UTF8.decode(plain);
  } catch (e) {
    throw new FieldError('FIELD_NOT_UTF8', 'the decrypted field is not UTF-8 text — use decryptBytes');
  }
}

/** The unwrapped data keys of a database. Make one with loadKeyring(); key material is not enumerable. */
class Keyring {
  constructor(rows, masterKey, source) {
    const fp = fingerprint(masterKey);
    const keys = new Map();
    let active = null;
    const statuses = [];
    for (const row of rows) {
      const number = Number(row.key_number);
      statuses.push({ number, status: row.status });
      if (row.status === 'retired' || row.encrypted_key === null || row.encrypted_key === undefined) continue;
      if (row.kek_fingerprint && row.kek_fingerprint.trim() !== fp) {
        throw new MasterKeyError('WRONG_MASTER_KEY', `the data keys are wrapped by master key ${row.kek_fingerprint.trim()}, ` +
          `but this master key is ${fp}`);
      }
      const dek = unwrapDek(masterKey, row.encrypted_key, number);
      if (row.status === 'active') active = { number, dek };
      if (row.status === 'active' || row.status === 'decrypt_only') keys.set(number, dek);
    }
    Object.defineProperty(this, '_keys', { value: keys });
    Object.defineProperty(this, '_active', { value: active });
    Object.defineProperty(this, '_masterKey', { value: masterKey });
    Object.defineProperty(this, '_source', { value: source });
    /** Every key's number and status (pending | active | decrypt_only | retired); no key material. */
    this.keys = statuses;
    /** The number of the key new fields are encrypted with, or null when there is none yet. */
    this.activeKeyNumber = active ? active.number : null;
  }

  /** Encrypt a value for (schema, table, column, pk) with the active key. */
  encrypt(schema, table, column, pk, plaintext) {
    if (!this._active) {
      throw new KeyringError('NO_ACTIVE_KEY', 'there is no active data key — run `minnoctl token rotate` (or ' +
        '`minnoctl token put`) once to create one');
    }
    return encryptField(this._active.dek, this._active.number, schema, table, column, pk, plaintext);
  }

  /** Decrypt a field to a string; FieldError with a code if it cannot be. */
  decrypt(schema, table, column, pk, field) {
    return decryptField(this._keys, schema, table, column, pk, field);
  }

  /** Decrypt a field to a Buffer. */
  decryptBytes(schema, table, column, pk, field) {
    return decryptFieldBytes(this._keys, schema, table, column, pk, field);
  }

  /** The key number in a field's header. */
  keyNumber(field) {
    return fieldKeyNumber(field);
  }

  /** A fresh keyring from the same connection or pool (after SQLSTATE MK001, or KEY_UNKNOWN). */
  reload() {
    return loadKeyring(this._source, this._masterKey);
  }
}

/**
 * Load the keyring: `db` is anything with node-postgres's query(text) (a Client, a Pool, a
 * PoolClient); `masterKey` a Buffer from parseMasterKey() or the base64 text. Every live key is
 * unwrapped here, so a wrong master key fails now, not at the first token.
 */
async function loadKeyring(db, masterKey) {
  const kek = Buffer.isBuffer(masterKey) ? masterKey : parseMasterKey(masterKey);
  if (kek.length !== KEY_BYTES) throw new MasterKeyError('MASTER_KEY_INVALID', `the master key must be ${KEY_BYTES} bytes`);
  const result = await db.query(KEYRING_SQL);
  return new Keyring(result.rows, kek, db);
}

/** True for a database error that a reloaded keyring fixes (the guard's SQLSTATE MK001). */
function isStaleKeyError(err) {
  return Boolean(err) && err.code === SQLSTATE_STALE_KEY;
}

exports.VERSION = VERSION;
exports.SQLSTATE_STALE_KEY = SQLSTATE_STALE_KEY;
exports.SQLSTATE_NOT_A_FIELD = SQLSTATE_NOT_A_FIELD;
exports.KEYRING_SQL = KEYRING_SQL;
exports.MinnoFieldsError = MinnoFieldsError;
exports.MasterKeyError = MasterKeyError;
exports.FieldError = FieldError;
exports.KeyringError = KeyringError;
exports.parseMasterKey = parseMasterKey;
exports.fingerprint = fingerprint;
exports.wrapDek = wrapDek;
exports.unwrapDek = unwrapDek;
exports.encryptField = encryptField;
exports.decryptField = decryptField;
exports.decryptFieldBytes = decryptFieldBytes;
exports.fieldKeyNumber = fieldKeyNumber;
exports.Keyring = Keyring;
exports.loadKeyring = loadKeyring;
exports.isStaleKeyError = isStaleKeyError;
