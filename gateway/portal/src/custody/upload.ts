// A centre's upload under threshold custody, in the browser (the steps of the Python client's
// `upload_sealed`): the federation from the chain; a fresh 256-bit data key and 32-byte salt;
// the key split t-of-n with SLIP-39 (npm slip39: each member's share a 1-of-1 group, group
// threshold t, iteration exponent 0, no passphrase), share i sealed with ECIES (eciesjs) to
// member i's custody key and committed to as sha256(share); the custody set hashed here and
// compared with the chain's; the RecordAttestation (custody set and share commitments
// included) signed by the centre's wallet; the document encrypted with AES-256-GCM under the
// record id and patient (AAD); the blob's CID (CIDv1 raw, sha2-256: one block, so at most
// 256 KiB here); the canonical manifest; ciphertext and manifest sent to this gateway. The
// plaintext and the whole key never leave the page. Loaded on demand.
import { bytesToHex, encodeAbiParameters, getAddress, hashTypedData, hexToBytes, keccak256, toHex, type Hex } from 'viem'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 as sha256Hasher } from 'multiformats/hashes/sha2'
import slip39 from 'slip39'
import { encrypt } from 'eciesjs'
import { upload, type Config, type RecordPublic } from '../api'
import type { Chain } from '../chain'
import { PortalError } from '../errors'

/** The largest document sealed here: its blob must be one raw IPFS block (262,144 bytes). */
export const MAX_DOCUMENT = 262_144 - (5 + 12 + 32 + 16)

async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', data as BufferSource))
}

const base64 = (bytes: Uint8Array): string => {
  let text = ''
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(text)
}

const random = (n: number): Uint8Array => crypto.getRandomValues(new Uint8Array(n))

/** Canonical JSON as the manifest's reader demands it: sorted keys, no spaces, ASCII. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`
  if (value !== null && typeof value === 'object')
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`
  return JSON.stringify(value)
}

export interface Uploaded {
  record: RecordPublic
  recordId: Hex
}

export async function uploadSealed(options: {
  config: Config
  chain: Chain
  centre: Hex
  patient: Hex
  category: Hex
  document: Uint8Array
  filename: string
  sign: (typedData: unknown) => Promise<Hex>
  progress: (fraction: number) => void
}): Promise<Uploaded> {
  const { config, chain, document } = options
  if (document.length > MAX_DOCUMENT) throw new PortalError('err.uploadTooBig', { max: MAX_DOCUMENT }, 'too_big')
  const fed = await chain.custodyFederation()
  if (!fed.members.length) throw new PortalError('err.noFederation', {}, 'no_federation')
  const patient = getAddress(options.patient)
  const dataKey = random(32)
  const salt = random(32)
  const payload = new Uint8Array([...salt, ...document])
  const contentDigest = toHex(await sha256(payload))

  const split = slip39.fromArray([...dataKey], {
    passphrase: '',
    threshold: fed.threshold,
    groups: fed.members.map((): [number, number] => [1, 1]),
    iterationExponent: 0,
    extendableBackupFlag: 0,
  })
  const shares = split.fromPath('r').mnemonics.map((m) => new TextEncoder().encode(m))
  const sealed = shares.map((s, i) => Uint8Array.from(encrypt(fed.members[i].custodyKey.slice(2), s)))
  const commitments = await Promise.all(shares.map(async (s) => toHex(await sha256(s))))
  const gateways = fed.members.map((m) => getAddress(m.gateway))
  const keys = fed.members.map((m) => m.custodyKey.toLowerCase() as Hex)
  const custodySet = keccak256(
    encodeAbiParameters([{ type: 'uint8' }, { type: 'address[]' }, { type: 'bytes[]' }], [fed.threshold, gateways, keys]),
  )
  if (custodySet !== fed.custodySet) throw new PortalError('err.custodySet', {}, 'custody_set_mismatch')
  const shareCommitments = keccak256(encodeAbiParameters([{ type: 'bytes32[]' }], [commitments]))
  const issuedAt = Math.floor(Date.now() / 1000)
  const typedData = {
    types: {
      EIP712Domain: [
        { name: 'name', type: 'string' },
        { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' },
        { name: 'verifyingContract', type: 'address' },
      ],
      RecordAttestation: [
        { name: 'patient', type: 'address' },
        { name: 'category', type: 'bytes32' },
        { name: 'contentDigest', type: 'bytes32' },
        { name: 'issuedAt', type: 'uint64' },
        { name: 'custodySet', type: 'bytes32' },
        { name: 'shareCommitments', type: 'bytes32' },
      ],
    },
    primaryType: 'RecordAttestation' as const,
    domain: { name: 'ConsentLedger', version: '1', chainId: config.chain_id, verifyingContract: config.registry },
    message: { patient, category: options.category, contentDigest, issuedAt, custodySet, shareCommitments },
  }
  const recordId = hashTypedData({ ...typedData, message: { ...typedData.message, issuedAt: BigInt(issuedAt) } } as never)
  const signature = await options.sign(typedData)

  // "CLRE" | 0x02 | nonce (12) | AES-256-GCM(salt || document) || tag, AAD "CLRE" | 0x02 |
  // record id | patient.
  const header = new Uint8Array([...new TextEncoder().encode('CLRE'), 2])
  const nonce = random(12)
  const aesKey = await crypto.subtle.importKey('raw', dataKey as BufferSource, 'AES-GCM', false, ['encrypt'])
  dataKey.fill(0)
  const aad = new Uint8Array([...header, ...hexToBytes(recordId), ...hexToBytes(patient)])
  const sealedPayload = new Uint8Array(
    await crypto.subtle.encrypt({ name: 'AES-GCM', iv: nonce as BufferSource, additionalData: aad as BufferSource }, aesKey, payload as BufferSource),
  )
  payload.fill(0)
  const blob = new Uint8Array([...header, ...nonce, ...sealedPayload])
  const cid = CID.create(1, raw.code, await sha256Hasher.digest(blob)).toString()
  const manifest = canonical({
    version: 1,
    threshold: fed.threshold,
    members: fed.members.map((_, i) => ({
      gateway: gateways[i],
      custody_key: keys[i],
      sealed_share: base64(sealed[i]),
      commitment: commitments[i],
    })),
    blob_cid: cid,
    blob_size: blob.length,
    blob_sha256: bytesToHex(await sha256(blob)),
  })

  const form = new FormData()
  form.append('patient', patient)
  form.append('category', options.category)
  form.append('issued_at', String(issuedAt))
  form.append('content_digest', contentDigest)
  form.append('signature', signature)
  form.append('ciphertext', new Blob([blob as BlobPart], { type: 'application/octet-stream' }), options.filename)
  form.append('manifest', new Blob([manifest], { type: 'application/json' }), 'manifest.json')
  const record = await upload<RecordPublic>('/v1/custody/records', form, options.progress)
  if (record.record_id.toLowerCase() !== recordId.toLowerCase()) throw new PortalError('err.otherRecordId', {}, 'record_id_mismatch')
  return { record, recordId }
}
