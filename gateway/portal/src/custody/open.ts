// Open one's own record under threshold custody, in the browser (the steps of the Python
// client's `fetch_federated`): the federation and the record's fields from the chain; a SIWE
// sign-in to every member at the URL the chain lists for it; the manifest and ciphertext from
// one member, accepted only if, with the chain's record fields, the manifest hashes to the
// record id (EIP-712 RecordAttestation with its custody set and share commitments); one share
// from each of `threshold` members, each opened with the built-in key and checked against its
// commitment (a bad one is named with its gateway); SLIP-39 combine; AES-256-GCM decrypt with
// the record's AAD; sha256(salt || document) compared with the chain's content digest.
// Loaded on demand: nobody downloads this chunk before pressing "Open".
import { encodeAbiParameters, getAddress, hashTypedData, hexToBytes, keccak256, toHex, type Hex } from 'viem'
import { createSiweMessage } from 'viem/siwe'
import slip39 from 'slip39'
import type { Config } from '../api'
import type { Chain, CustodyFederation } from '../chain'
import { PortalError, fromGateway } from '../errors'
import type { LocalKey } from '../localkey'

const RECORD_MAGIC = new TextEncoder().encode('CLRE')
const RECORD_VERSION = 2
const NONCE_SIZE = 12
const SALT_SIZE = 32

interface ManifestMember {
  gateway: string
  custody_key: Hex
  sealed_share: string
  commitment: Hex
}

interface Manifest {
  version: number
  threshold: number
  members: ManifestMember[]
  blob_cid: string
  blob_sha256: Hex
  blob_size: number
}

interface Bundle {
  record_id: string
  patient: string
  cid: string
  manifest: string
  ciphertext: string
}

interface Release {
  gateway: string
  index: number
  sealed_share: string
}

export interface Opened {
  document: Uint8Array
  bad: string[]
  signIns: number
}

const base64 = (text: string): Uint8Array => Uint8Array.from(atob(text), (c) => c.charCodeAt(0))

async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', data as BufferSource))
}

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i])

/** One member of the federation: its URL as the chain lists it, and a session there. */
class Member {
  readonly base: string
  token: string | null = null

  constructor(readonly gateway: Hex, url: string) {
    this.base = url.replace(/\/+$/, '')
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Accept: 'application/json' }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    if (this.token) headers.Authorization = `Bearer ${this.token}`
    let response: Response
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'omit',
        cache: 'no-store',
        mode: 'cors',
      })
    } catch {
      throw new PortalError('err.memberDown', { gateway: this.gateway }, 'gateway_unreachable')
    }
    const parsed: unknown = await response.json().catch(() => null)
    if (!response.ok) throw fromGateway(response.status, parsed, response.headers.get('Retry-After'))
    return parsed as T
  }

  /** SIWE for this member's own origin (the URL the chain lists), signed by the built-in key. */
  async signIn(config: Config, key: LocalKey): Promise<void> {
    const origin = new URL(this.base)
    const nonce = await this.call<{ nonce: string; domain: string; uri: string; chain_id: number | null }>(
      'POST',
      '/v1/auth/nonce',
    )
    if (nonce.domain.toLowerCase() !== origin.host.toLowerCase() || nonce.uri.replace(/\/+$/, '') !== origin.origin)
      throw new PortalError('err.memberDomain', { gateway: this.gateway }, 'siwe_domain_mismatch')
    const now = new Date()
    const message = createSiweMessage({
      domain: origin.host,
      address: key.address,
      statement: 'Sign in to Consent Ledger',
      uri: nonce.uri,
      version: '1',
      chainId: config.chain_id,
      nonce: nonce.nonce,
      issuedAt: now,
      expirationTime: new Date(now.getTime() + 3600_000),
    })
    const signature = (await key.request({ method: 'personal_sign', params: [toHex(message), key.address] })) as Hex
    const session = await this.call<{ token: string }>('POST', '/v1/auth/login', { message, signature })
    this.token = session.token
  }
}

function parseManifest(raw: Uint8Array): Manifest {
  try {
    const m = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(raw)) as Manifest
    if (
      m.version !== 1 ||
      !Number.isInteger(m.threshold) ||
      !Array.isArray(m.members) ||
      m.threshold < 1 ||
      m.threshold > m.members.length
    )
      throw new Error('shape')
    return m
  } catch {
    throw new PortalError('err.manifest', {}, 'malformed_manifest')
  }
}

/** The record id the registry derives for the chain's record fields and this manifest. */
function attestedId(config: Config, record: Awaited<ReturnType<Chain['recordOf']>>, m: Manifest): Hex {
  const custodySet = keccak256(
    encodeAbiParameters(
      [{ type: 'uint8' }, { type: 'address[]' }, { type: 'bytes[]' }],
      [m.threshold, m.members.map((x) => getAddress(x.gateway)), m.members.map((x) => x.custody_key)],
    ),
  )
  const shareCommitments = keccak256(encodeAbiParameters([{ type: 'bytes32[]' }], [m.members.map((x) => x.commitment)]))
  return hashTypedData({
    domain: { name: 'ConsentLedger', version: '1', chainId: config.chain_id, verifyingContract: config.registry },
    types: {
      RecordAttestation: [
        { name: 'patient', type: 'address' },
        { name: 'category', type: 'bytes32' },
        { name: 'contentDigest', type: 'bytes32' },
        { name: 'issuedAt', type: 'uint64' },
        { name: 'custodySet', type: 'bytes32' },
        { name: 'shareCommitments', type: 'bytes32' },
      ],
    },
    primaryType: 'RecordAttestation',
    message: {
      patient: record.patient,
      category: record.category,
      contentDigest: record.contentDigest,
      issuedAt: BigInt(record.issuedAt),
      custodySet,
      shareCommitments,
    },
  })
}

/** The record's document, once every check has passed. `progress` gets a key per step. */
export async function openRecord(
  config: Config,
  chain: Chain,
  key: LocalKey,
  recordId: Hex,
  purpose: string,
  progress: (step: string, params?: Record<string, string | number>) => void,
): Promise<Opened> {
  const [fed, record]: [CustodyFederation, Awaited<ReturnType<Chain['recordOf']>>] = await Promise.all([
    chain.custodyFederation(),
    chain.recordOf(recordId),
  ])
  if (!fed.members.length) throw new PortalError('err.noFederation', {}, 'no_federation')
  if (BigInt(record.patient) === 0n) throw new PortalError('err.recordUnknown', {}, 'record_not_found')
  const members = new Map(fed.members.map((m) => [getAddress(m.gateway), new Member(getAddress(m.gateway), m.url)]))
  let signIns = 0
  const session = async (member: Member): Promise<boolean> => {
    if (member.token) return true
    progress('open.signingIn', { gateway: member.gateway })
    try {
      await member.signIn(config, key)
      signIns++
      return true
    } catch {
      return false
    }
  }

  // The manifest and the ciphertext, from the first member that serves ones the chain backs.
  let manifest: Manifest | null = null
  let blob: Uint8Array | null = null
  for (const member of members.values()) {
    if (!(await session(member))) continue
    try {
      const bundle = await member.call<Bundle>('GET', `/v1/custody/records/${recordId}`)
      const m = parseManifest(base64(bundle.manifest))
      if (attestedId(config, record, m).toLowerCase() !== recordId.toLowerCase()) continue
      const b = base64(bundle.ciphertext)
      if (toHex(await sha256(b)) !== m.blob_sha256.toLowerCase() || b.length !== m.blob_size) continue
      manifest = m
      blob = b
      break
    } catch {
      // this member is down or refused: the next one
    }
  }
  if (!manifest || !blob) throw new PortalError('err.noBundle', {}, 'no_bundle')

  // Shares, in manifest order, until `threshold` match their commitments.
  const good: string[] = []
  const bad: string[] = []
  let denied: PortalError | null = null
  for (const [index, entry] of manifest.members.entries()) {
    if (good.length >= manifest.threshold) break
    const member = members.get(getAddress(entry.gateway))
    if (!member || !(await session(member))) continue
    progress('open.asking', { gateway: member.gateway })
    let release: Release
    try {
      release = await member.call<Release>('GET', `/v1/custody/records/${recordId}/share?purpose=${encodeURIComponent(purpose)}`)
    } catch (exc) {
      if (exc instanceof PortalError && exc.code === 'consent_denied') denied = exc
      continue
    }
    let share: Uint8Array
    try {
      if (release.index !== index) throw new Error('index')
      share = await key.unseal(base64(release.sealed_share))
    } catch {
      bad.push(member.gateway)
      continue
    }
    if (!equal(await sha256(share), hexToBytes(entry.commitment))) {
      bad.push(member.gateway)
      continue
    }
    good.push(new TextDecoder('ascii').decode(share))
  }
  if (good.length < manifest.threshold) {
    if (bad.length) throw new PortalError('err.badShares', { gateways: bad.join(', ') }, 'bad_share')
    if (denied) throw denied
    throw new PortalError('err.notEnoughShares', { have: good.length, need: manifest.threshold }, 'not_enough_shares')
  }
  progress('open.combining')
  let dataKey: Uint8Array
  try {
    dataKey = Uint8Array.from(slip39.recoverSecret(good, ''))
  } catch {
    throw new PortalError('err.combine', {}, 'combine_failed')
  }

  // The blob: "CLRE" | 0x02 | nonce (12) | AES-256-GCM(salt || document) || tag, under the AAD
  // "CLRE" | 0x02 | record id (32) | patient (20).
  const header = blob.slice(0, 5)
  if (!equal(header.slice(0, 4), RECORD_MAGIC) || header[4] !== RECORD_VERSION)
    throw new PortalError('err.decrypt', {}, 'malformed_envelope')
  const aad = new Uint8Array([...header, ...hexToBytes(recordId), ...hexToBytes(record.patient)])
  const aesKey = await crypto.subtle.importKey('raw', dataKey as BufferSource, 'AES-GCM', false, ['decrypt'])
  dataKey.fill(0)
  let payload: Uint8Array
  try {
    payload = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: 'AES-GCM', iv: blob.slice(5, 5 + NONCE_SIZE), additionalData: aad },
        aesKey,
        blob.slice(5 + NONCE_SIZE) as BufferSource,
      ),
    )
  } catch {
    throw new PortalError('err.decrypt', {}, 'decryption_failed')
  }
  if (payload.length < SALT_SIZE || toHex(await sha256(payload)) !== record.contentDigest.toLowerCase())
    throw new PortalError('err.digest', {}, 'digest_mismatch')
  return { document: payload.slice(SALT_SIZE), bad, signIns }
}
