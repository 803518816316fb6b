// Types of minno-fields.cjs: minnoctl's encrypted token and secret columns (../FORMAT.md).

/** Anything with node-postgres's query(): a Client, a Pool or a PoolClient. */
export interface Queryable {
  query(text: string): Promise<{ rows: any[] }>;
}

export type KeyStatus = 'pending' | 'active' | 'decrypt_only' | 'retired';
export type PrimaryKey = string | number | bigint;
export type Plaintext = string | Uint8Array;

export type MasterKeyErrorCode = 'MASTER_KEY_INVALID' | 'WRONG_MASTER_KEY';
export type FieldErrorCode = 'FIELD_MALFORMED' | 'FIELD_VERSION' | 'KEY_UNKNOWN' | 'FIELD_AUTH' | 'FIELD_NOT_UTF8';
export type KeyringErrorCode = 'NO_ACTIVE_KEY' | 'KEYRING_INVALID';

export declare const VERSION: 1;
/** The guard's SQLSTATE for a field under a retired, fenced or unknown key: reload the keyring, write again. */
export declare const SQLSTATE_STALE_KEY: 'MK001';
/** The guard's SQLSTATE for a value that is not an encrypted field (a plaintext write). */
export declare const SQLSTATE_NOT_A_FIELD: 'MK002';
/** The query loadKeyring() runs. */
export declare const KEYRING_SQL: string;

export declare class MinnoFieldsError extends Error {
  readonly code: MasterKeyErrorCode | FieldErrorCode | KeyringErrorCode;
}
export declare class MasterKeyError extends MinnoFieldsError {
  readonly code: MasterKeyErrorCode;
}
export declare class FieldError extends MinnoFieldsError {
  readonly code: FieldErrorCode;
}
export declare class KeyringError extends MinnoFieldsError {
  readonly code: KeyringErrorCode;
}

/** The master key from its base64 text (MINNO_MASTER_KEY): 32 bytes. Throws MasterKeyError. */
export declare function parseMasterKey(text: string): Buffer;
/** A master key's public name (16 hex digits), as in minno.encryption_keys.kek_fingerprint. */
export declare function fingerprint(masterKey: Uint8Array): string;
export declare function wrapDek(masterKey: Uint8Array, dek: Uint8Array, keyNumber: number,
                                options?: { nonce?: Uint8Array }): string;
export declare function unwrapDek(masterKey: Uint8Array, encryptedKey: string, keyNumber: number): Buffer;
/** Encrypt with a given data key; `options.nonce` is for test vectors only. */
export declare function encryptField(dek: Uint8Array, keyNumber: number, schema: string, table: string, column: string,
                                     pk: PrimaryKey, plaintext: Plaintext, options?: { nonce?: Uint8Array }): string;
export declare function decryptField(keys: Map<number, Uint8Array> | Record<number, Uint8Array>, schema: string,
                                     table: string, column: string, pk: PrimaryKey, field: string): string;
export declare function decryptFieldBytes(keys: Map<number, Uint8Array> | Record<number, Uint8Array>, schema: string,
                                          table: string, column: string, pk: PrimaryKey, field: string): Buffer;
/** The key number in a field's header, without decrypting. Throws FieldError. */
export declare function fieldKeyNumber(field: string): number;

export declare class Keyring {
  private constructor();
  /** Every key's number and status; no key material. */
  readonly keys: ReadonlyArray<{ number: number; status: KeyStatus }>;
  /** The key new fields are encrypted with; null before the first key exists. */
  readonly activeKeyNumber: number | null;
  /** Encrypt with the active key. `pk` is the row's primary key as PostgreSQL prints it (pk::text). */
  encrypt(schema: string, table: string, column: string, pk: PrimaryKey, plaintext: Plaintext): string;
  /** Decrypt to a string. Throws FieldError (code FIELD_AUTH, KEY_UNKNOWN, ...). */
  decrypt(schema: string, table: string, column: string, pk: PrimaryKey, field: string): string;
  decryptBytes(schema: string, table: string, column: string, pk: PrimaryKey, field: string): Buffer;
  keyNumber(field: string): number;
  /** Load the keyring again from the same connection or pool. */
  reload(): Promise<Keyring>;
}

/** Query minno.encryption_keys and unwrap every live key. Throws MasterKeyError on a wrong master key. */
export declare function loadKeyring(db: Queryable, masterKey: Uint8Array | string): Promise<Keyring>;
/** True for the guard's SQLSTATE MK001 (reload the keyring and write again). */
export declare function isStaleKeyError(err: unknown): boolean;
