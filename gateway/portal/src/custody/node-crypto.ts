// The three functions of Node's `crypto` that npm `slip39` calls, for the browser (vite.config.ts
// aliases `crypto` here, in the custody chunk only): randomness from WebCrypto, PBKDF2 and HMAC
// (SHA-256) from @noble/hashes. Nothing else of Node's module is provided.
import { hmac } from '@noble/hashes/hmac'
import { pbkdf2 } from '@noble/hashes/pbkdf2'
import { sha256 } from '@noble/hashes/sha2'

type Bytes = Uint8Array | number[]

const bytes = (value: Bytes): Uint8Array => (value instanceof Uint8Array ? value : Uint8Array.from(value))

function onlySha256(digest: string): void {
  if (digest !== 'sha256') throw new Error(`unsupported digest ${digest}`)
}

export function randomBytes(length: number): Uint8Array {
  return globalThis.crypto.getRandomValues(new Uint8Array(length))
}

export function pbkdf2Sync(password: Bytes, salt: Bytes, iterations: number, keylen: number, digest: string): Uint8Array {
  onlySha256(digest)
  return pbkdf2(sha256, bytes(password), bytes(salt), { c: iterations, dkLen: keylen })
}

export function createHmac(digest: string, key: Bytes) {
  onlySha256(digest)
  const mac = hmac.create(sha256, bytes(key))
  const api = {
    update(data: Bytes) {
      mac.update(bytes(data))
      return api
    },
    digest: (): Uint8Array => mac.digest(),
  }
  return api
}

export default { randomBytes, pbkdf2Sync, createHmac }
