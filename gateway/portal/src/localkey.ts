// The built-in key: a secp256k1 key made in this browser, kept in IndexedDB encrypted with a
// passphrase (WebCrypto: PBKDF2-SHA256, 600,000 iterations -> AES-256-GCM), unlocked into memory
// only, and exportable as an Ethereum keyfile (Web3 Secret Storage v3, pbkdf2 + aes-128-ctr +
// keccak MAC) that `consent key import NAME --key-file F` reads; a keyfile of `consent key new`
// (scrypt, @noble/hashes) or pbkdf2 is imported the other way. Loaded on demand: a wallet
// user never downloads it. It answers the same EIP-1193 requests an injected wallet does.
import { bytesToHex, hexToBytes, keccak256, concatBytes, type Hex } from 'viem'
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts'
import { scryptAsync } from '@noble/hashes/scrypt'
import { PortalError } from './errors'
import { ID, tx, type StoredKey } from './keystore'

const ITERATIONS = 600_000
const KEYFILE_ITERATIONS = 262_144
const MIN_PASSPHRASE = 10

async function aesKey(passphrase: string, salt: Uint8Array, iterations: number): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey('raw', new TextEncoder().encode(passphrase), 'PBKDF2', false, ['deriveKey'])
  return crypto.subtle.deriveKey(
    { name: 'PBKDF2', hash: 'SHA-256', salt: salt as BufferSource, iterations },
    base,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  )
}

export class LocalKey {
  readonly address: Hex
  private readonly account: PrivateKeyAccount

  constructor(
    private readonly privateKey: Hex,
    private readonly passphrase: string,
    private readonly chainId: number,
  ) {
    this.account = privateKeyToAccount(privateKey)
    this.address = this.account.address
  }

  /** EIP-1193, as a wallet answers. */
  async request({ method, params }: { method: string; params?: unknown[] }): Promise<unknown> {
    const p = params ?? []
    switch (method) {
      case 'eth_requestAccounts':
      case 'eth_accounts':
        return [this.address]
      case 'eth_chainId':
        return `0x${this.chainId.toString(16)}`
      case 'personal_sign':
        return this.account.signMessage({ message: { raw: p[0] as Hex } })
      case 'eth_signTypedData_v4':
        return this.account.signTypedData(JSON.parse(String(p[1])))
      default:
        throw new PortalError('err.localNoTx')
    }
  }

  /** Open an ECIES (eciesjs/eciespy format) box sealed to this key: a custody share re-sealed
   * to the SIWE-recovered key of the session. The private key never leaves this object. */
  async unseal(sealed: Uint8Array): Promise<Uint8Array> {
    const { decrypt } = await import('eciesjs')
    return Uint8Array.from(decrypt(this.privateKey.slice(2), sealed))
  }

  /** An Ethereum keyfile (v3, pbkdf2) encrypted with the same passphrase. */
  async keyfile(): Promise<Record<string, unknown>> {
    const salt = crypto.getRandomValues(new Uint8Array(32))
    const iv = crypto.getRandomValues(new Uint8Array(16))
    const base = await crypto.subtle.importKey('raw', new TextEncoder().encode(this.passphrase), 'PBKDF2', false, ['deriveBits'])
    const derived = new Uint8Array(
      await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations: KEYFILE_ITERATIONS }, base, 256),
    )
    const ctrKey = await crypto.subtle.importKey('raw', derived.slice(0, 16), 'AES-CTR', false, ['encrypt'])
    const ciphertext = new Uint8Array(
      await crypto.subtle.encrypt({ name: 'AES-CTR', counter: iv, length: 128 }, ctrKey, hexToBytes(this.privateKey) as BufferSource),
    )
    const mac = keccak256(concatBytes([derived.slice(16, 32), ciphertext]))
    return {
      address: this.address.slice(2).toLowerCase(),
      crypto: {
        cipher: 'aes-128-ctr',
        cipherparams: { iv: bytesToHex(iv).slice(2) },
        ciphertext: bytesToHex(ciphertext).slice(2),
        kdf: 'pbkdf2',
        kdfparams: { c: KEYFILE_ITERATIONS, dklen: 32, prf: 'hmac-sha256', salt: bytesToHex(salt).slice(2) },
        mac: mac.slice(2),
      },
      id: crypto.randomUUID(),
      version: 3,
    }
  }
}

export async function createKey(passphrase: string, confirm: string, chainId: number): Promise<LocalKey> {
  if (passphrase.length < MIN_PASSPHRASE) throw new PortalError('err.passphraseShort', { min: MIN_PASSPHRASE })
  if (passphrase !== confirm) throw new PortalError('err.passphraseMismatch')
  return store(generatePrivateKey(), passphrase, chainId)
}

async function store(privateKey: Hex, passphrase: string, chainId: number): Promise<LocalKey> {
  const salt = crypto.getRandomValues(new Uint8Array(16))
  const iv = crypto.getRandomValues(new Uint8Array(12))
  const key = await aesKey(passphrase, salt, ITERATIONS)
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, key, hexToBytes(privateKey) as BufferSource),
  )
  const local = new LocalKey(privateKey, passphrase, chainId)
  const stored: StoredKey = { address: local.address, salt, iv, ciphertext, iterations: ITERATIONS }
  await tx('readwrite', (s) => s.put(stored, ID))
  return local
}

interface Keyfile {
  address?: string
  crypto?: {
    cipher: string
    cipherparams: { iv: string }
    ciphertext: string
    kdf: string
    kdfparams: Record<string, number | string>
    mac: string
  }
}

/** Import an Ethereum keyfile (v3: scrypt, as `consent key new` writes, or pbkdf2) opened with
 * its passphrase, and keep it in this browser under the same passphrase. */
export async function importKeyfile(text: string, passphrase: string, chainId: number): Promise<LocalKey> {
  if (passphrase.length < MIN_PASSPHRASE) throw new PortalError('err.passphraseShort', { min: MIN_PASSPHRASE })
  let file: Keyfile
  try {
    file = JSON.parse(text) as Keyfile
  } catch {
    throw new PortalError('err.keyfile')
  }
  const c = file.crypto
  if (!c || c.cipher !== 'aes-128-ctr') throw new PortalError('err.keyfile')
  const p = c.kdfparams
  const salt = hexToBytes(`0x${String(p.salt)}`)
  const secret = new TextEncoder().encode(passphrase)
  let derived: Uint8Array
  if (c.kdf === 'scrypt') {
    derived = await scryptAsync(secret, salt, { N: Number(p.n), r: Number(p.r), p: Number(p.p), dkLen: Number(p.dklen) })
  } else if (c.kdf === 'pbkdf2' && p.prf === 'hmac-sha256') {
    const base = await crypto.subtle.importKey('raw', secret, 'PBKDF2', false, ['deriveBits'])
    derived = new Uint8Array(
      await crypto.subtle.deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: salt as BufferSource, iterations: Number(p.c) }, base, 256),
    )
  } else {
    throw new PortalError('err.keyfile')
  }
  const ciphertext = hexToBytes(`0x${c.ciphertext}`)
  if (keccak256(concatBytes([derived.slice(16, 32), ciphertext])).slice(2) !== c.mac.toLowerCase())
    throw new PortalError('err.keyfilePassphrase') // the MAC says: another passphrase
  const ctrKey = await crypto.subtle.importKey('raw', derived.slice(0, 16) as BufferSource, 'AES-CTR', false, ['decrypt'])
  const plain = new Uint8Array(
    await crypto.subtle.decrypt(
      { name: 'AES-CTR', counter: hexToBytes(`0x${c.cipherparams.iv}`) as BufferSource, length: 128 },
      ctrKey,
      ciphertext as BufferSource,
    ),
  )
  return store(bytesToHex(plain), passphrase, chainId)
}

export async function unlockKey(passphrase: string, chainId: number): Promise<LocalKey> {
  const stored = await tx<StoredKey | undefined>('readonly', (s) => s.get(ID))
  if (!stored) throw new PortalError('err.noLocalKey')
  const key = await aesKey(passphrase, stored.salt, stored.iterations)
  let plain: ArrayBuffer
  try {
    plain = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: stored.iv as BufferSource }, key, stored.ciphertext as BufferSource)
  } catch {
    throw new PortalError('err.passphrase') // the GCM tag does not verify: another passphrase
  }
  const local = new LocalKey(bytesToHex(new Uint8Array(plain)), passphrase, chainId)
  if (local.address.toLowerCase() !== stored.address.toLowerCase()) throw new PortalError('err.passphrase')
  return local
}
