// Consent receipts, built in the browser from the chain-backed consent list: a FHIR R5
// Consent and a Kantara Consent Receipt v1.1 / ISO/IEC 27560-shaped JSON. The reference
// implementation is ledger/audit/receipts.py; a test holds the two equal.
import { sha256, toHex, hexToBytes } from 'viem'
import type { ConsentPublic } from './api'

const CAIP10 = 'https://chainagnostic.org/CAIPs/caip-10'
const ACT_REASON = 'http://terminology.hl7.org/CodeSystem/v3-ActReason'
const NO_EXPIRY = 18446744073709551615 // 2**64 - 1 (as a JS number: rounds to 2**64)
const PURPOSE_CODES: Record<number, [string, string]> = {
  0: ['TREAT', 'treatment'],
  1: ['HRESCH', 'healthcare research'],
  2: ['COVERAGE', 'coverage under policy or program'],
  3: ['PUBHLTH', 'public health'],
  4: ['ETREAT', 'emergency treatment'],
}
const PURPOSE_NAMES: Record<number, string> = {
  0: 'treatment',
  1: 'research',
  2: 'insurance',
  3: 'public health',
  4: 'emergency',
}

export interface ReceiptContext {
  chainId: number
  registry: string
  blockNumber: number
  blockTime: number
  language: string
}

const instant = (ts: number): string => new Date(ts * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')
const caip10 = (chainId: number, address: string): string => `eip155:${chainId}:${address}`

function account(chainId: number, address: string, display?: string): Record<string, unknown> {
  const ref: Record<string, unknown> = {
    identifier: { system: CAIP10, value: caip10(chainId, address) },
  }
  if (display) ref.display = display
  return ref
}

export function categoryOf(scopeId: string): string {
  const bytes = hexToBytes(scopeId as `0x${string}`)
  let end = bytes.length
  while (end > 0 && bytes[end - 1] === 0) end--
  return new TextDecoder('ascii').decode(bytes.slice(0, end))
}

export function receiptId(c: ConsentPublic, chainId: number, registry: string): string {
  const key = [
    String(chainId),
    registry.toLowerCase(),
    c.patient.toLowerCase(),
    c.grantee.toLowerCase(),
    c.scope_kind,
    c.scope_id.toLowerCase(),
  ].join('|')
  return 'cl-' + sha256(toHex(new TextEncoder().encode(key))).slice(2, 42)
}

function purposeCoding(p: number): Record<string, string> {
  const code = PURPOSE_CODES[p]
  if (!code) return { system: 'urn:consent-ledger:purpose', code: String(p) }
  return { system: ACT_REASON, code: code[0], display: code[1] }
}

export function consentR5(c: ConsentPublic, ctx: ReceiptContext): Record<string, unknown> {
  const scopeId = c.scope_id.toLowerCase()
  const provision: Record<string, unknown> = {
    actor: [
      {
        role: {
          coding: [
            {
              system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType',
              code: 'IRCP',
              display: 'information recipient',
            },
          ],
        },
        reference: account(ctx.chainId, c.grantee),
      },
    ],
    action: [
      { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access' }] },
    ],
    purpose: [...c.purposes].sort((a, b) => a - b).map(purposeCoding),
  }
  if (c.expires_at < NO_EXPIRY) provision.period = { end: instant(c.expires_at) }
  if (c.scope_kind === 'record') {
    provision.data = [
      {
        meaning: 'instance',
        reference: {
          reference: `DocumentReference/${scopeId.slice(2)}`,
          display: `record ${scopeId}`,
        },
      },
    ]
  } else if (c.scope_kind === 'category') {
    provision.documentType = [{ system: 'urn:consent-ledger:category', code: categoryOf(scopeId) }]
  }
  return {
    resourceType: 'Consent',
    id: receiptId(c, ctx.chainId, ctx.registry),
    identifier: [
      {
        system: 'urn:consent-ledger:consent-slot',
        value: `${caip10(ctx.chainId, ctx.registry)}/${c.patient}/${c.grantee}/${c.scope_kind}/${scopeId}`,
      },
    ],
    status: c.active ? 'active' : 'inactive',
    category: [
      { coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] },
    ],
    subject: account(ctx.chainId, c.patient),
    grantor: [account(ctx.chainId, c.patient)],
    grantee: [account(ctx.chainId, c.grantee)],
    controller: [account(ctx.chainId, ctx.registry, 'Consent Ledger registry')],
    decision: 'permit',
    provision: [provision],
    meta: { tag: [{ system: 'urn:consent-ledger:block', code: String(ctx.blockNumber) }] },
  }
}

export function kantaraReceipt(c: ConsentPublic, ctx: ReceiptContext): Record<string, unknown> {
  const scopeId = c.scope_id.toLowerCase()
  const scope =
    c.scope_kind === 'record'
      ? `record ${scopeId}`
      : c.scope_kind === 'category'
        ? `category ${categoryOf(scopeId)}`
        : 'all records'
  const termination =
    c.expires_at >= NO_EXPIRY
      ? 'until revoked'
      : `until ${instant(c.expires_at)} or until revoked, whichever is first`
  const purposes = [...c.purposes].sort((a, b) => a - b)
  return {
    version: 'KI-CR-v1.1.0',
    jurisdiction: 'CN',
    consentTimestamp: ctx.blockTime,
    collectionMethod:
      'EIP-712 signature by the patient, held by the Consent Ledger registry on chain',
    consentReceiptID: receiptId(c, ctx.chainId, ctx.registry),
    language: ctx.language,
    piiPrincipalId: caip10(ctx.chainId, c.patient),
    piiControllers: [
      {
        piiController: 'Consent Ledger registry',
        contact: 'the registry administrator',
        address: caip10(ctx.chainId, ctx.registry),
        email: '',
        phone: '',
      },
    ],
    policyUrl: `urn:consent-ledger:registry:${caip10(ctx.chainId, ctx.registry)}`,
    services: [
      {
        service: 'checkup results',
        purposes: purposes.map((p, i) => ({
          purpose: PURPOSE_NAMES[p] ?? `purpose ${p}`,
          purposeCategory: [purposeCoding(p).code],
          consentType: 'EXPLICIT',
          piiCategory: [scope],
          primaryPurpose: i === 0,
          termination,
          thirdPartyDisclosure: true,
          thirdPartyName: caip10(ctx.chainId, c.grantee),
        })),
      },
    ],
    sensitive: true,
    spiCat: ['health'],
    evidence: {
      chainId: ctx.chainId,
      registry: ctx.registry,
      blockNumber: ctx.blockNumber,
      patient: c.patient,
      grantee: c.grantee,
      scopeKind: c.scope_kind,
      scopeId,
      purposes,
      expiresAt: c.expires_at,
      status: c.active ? 'active' : 'inactive',
    },
  }
}

export function download(filename: string, body: unknown): void {
  const blob = new Blob([JSON.stringify(body, null, 2) + '\n'], { type: 'application/json' })
  const url = URL.createObjectURL(blob)
  const a = document.createElement('a')
  a.href = url
  a.download = filename
  document.body.append(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 10_000)
}
