// EIP-712 GrantConsent / RevokeConsent, flat as the registry defines them, each bare number
// shown beside a readable string (purposes, scope kind, category, times).
import type { Hex } from 'viem'
import type { Config } from './api'
import { categoryOf } from './receipts'
import { fmtDate, purposeName, t, categoryName } from './i18n'

const DOMAIN_TYPE = [
  { name: 'name', type: 'string' },
  { name: 'version', type: 'string' },
  { name: 'chainId', type: 'uint256' },
  { name: 'verifyingContract', type: 'address' },
]

const GRANT_TYPE = [
  { name: 'patient', type: 'address' },
  { name: 'grantee', type: 'address' },
  { name: 'scopeKind', type: 'uint8' },
  { name: 'scopeId', type: 'bytes32' },
  { name: 'purposes', type: 'uint32' },
  { name: 'expiresAt', type: 'uint64' },
  { name: 'signer', type: 'address' },
  { name: 'nonce', type: 'uint256' },
  { name: 'deadline', type: 'uint256' },
]

const REVOKE_TYPE = GRANT_TYPE.filter((f) => f.name !== 'purposes' && f.name !== 'expiresAt')

export interface ConsentMessage {
  patient: Hex
  grantee: Hex
  scopeKind: number
  scopeId: Hex
  purposes?: number
  expiresAt?: number
  signer: Hex
  nonce: number
  deadline: number
}

export function typedData(config: Config, action: 'grant' | 'revoke', message: ConsentMessage) {
  const primaryType = action === 'grant' ? 'GrantConsent' : 'RevokeConsent'
  const fields = action === 'grant' ? GRANT_TYPE : REVOKE_TYPE
  const body: Record<string, unknown> = {}
  for (const f of fields) body[f.name] = message[f.name as keyof ConsentMessage]
  return {
    types: { EIP712Domain: DOMAIN_TYPE, [primaryType]: fields },
    primaryType,
    domain: {
      name: 'ConsentLedger',
      version: '1',
      chainId: config.chain_id,
      verifyingContract: config.registry,
    },
    message: body,
  }
}

export function purposesOfMask(mask: number): number[] {
  const ids: number[] = []
  for (let bit = 0; bit < 32; bit++) if ((mask >>> bit) & 1) ids.push(bit)
  return ids
}

const SCOPE_NAMES = ['grant.scope.record', 'grant.scope.category', 'grant.scope.all']

/** [field, value as signed, what it means] for each field of the message. */
export function readableRows(
  data: ReturnType<typeof typedData>,
): [string, string, string][] {
  const m = data.message as Record<string, unknown>
  const rows: [string, string, string][] = [
    ['domain', `${data.domain.name} v${data.domain.version}`, `chain ${data.domain.chainId}, ${data.domain.verifyingContract}`],
  ]
  for (const [name, value] of Object.entries(m)) {
    let meaning = ''
    if (name === 'purposes') meaning = purposesOfMask(Number(value)).map(purposeName).join(', ')
    else if (name === 'scopeKind') meaning = t(SCOPE_NAMES[Number(value)] ?? '')
    else if (name === 'scopeId') {
      const kind = Number(m.scopeKind)
      meaning = kind === 1 ? categoryName(categoryOf(String(value))) : kind === 2 ? t('grant.scope.all') : t('records.record')
    } else if (name === 'expiresAt' || name === 'deadline') meaning = fmtDate(Number(value))
    else if (name === 'patient' || name === 'signer' || name === 'grantee') meaning = ''
    rows.push([name, String(value), meaning])
  }
  return rows
}
