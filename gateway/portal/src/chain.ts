// Reads the chain directly from the browser, at the RPC URL named in /portal/config.json,
// against the registry address and chain id it names: the gateway's API answers are checked
// against these reads (consentOf after a revoke, checkpointOf for every proof).
import {
  decodeEventLog,
  decodeFunctionResult,
  encodeEventTopics,
  encodeFunctionData,
  keccak256,
  parseAbi,
  toHex,
  type Hex,
} from 'viem'
import type { Config } from './api'
import { PortalError } from './errors'

export const REGISTRY_ABI = parseAbi([
  'function consentOf(address patient, address grantee, uint8 scopeKind, bytes32 scopeId) view returns (uint32 purposes, uint64 expiresAt)',
  'function checkpointOf(address gateway) view returns (uint64 treeSize, bytes32 rootHash)',
  'function hasRole(bytes32 role, address account) view returns (bool)',
  'function nonces(address owner) view returns (uint256)',
  'function guardianOf(address patient) view returns (address)',
  'function breakGlassUntil(address patient, address institution) view returns (uint64)',
  'function breakGlassReopensAt(address patient, address institution) view returns (uint64)',
  'function closeBreakGlass(address patient, address institution)',
  'function federation() view returns (uint8 threshold, bytes32 custodySet, address[] gateways, bytes[] custodyKeys, string[] urls)',
  'function recordOf(bytes32 recordId) view returns ((address patient, uint64 issuedAt, address centre, bytes32 category, bytes32 contentDigest))',
  'event BreakGlassOpened(address indexed patient, address indexed institution, uint64 until, bytes32 reasonHash)',
  'event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender)',
])

type ViewName =
  | 'consentOf'
  | 'checkpointOf'
  | 'hasRole'
  | 'nonces'
  | 'guardianOf'
  | 'breakGlassUntil'
  | 'breakGlassReopensAt'
  | 'federation'
  | 'recordOf'

interface RpcBlock {
  number: Hex
  timestamp: Hex
}

interface RpcLog {
  blockNumber: Hex
  data: Hex
  topics: [Hex, ...Hex[]]
}

/** Plain JSON-RPC over fetch: every read is a fresh request (no cache), so a confirmation
 * read after a transaction sees the block that holds it. */
class Rpc {
  private id = 0
  constructor(private readonly url: string) {}

  async call<T>(method: string, params: unknown[]): Promise<T> {
    let response: Response
    try {
      response = await fetch(this.url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ jsonrpc: '2.0', id: ++this.id, method, params }),
        credentials: 'omit',
        cache: 'no-store',
        signal: AbortSignal.timeout(10_000),
      })
    } catch {
      throw new PortalError('err.chainDown', {}, 'chain_unreachable')
    }
    const body = (await response.json().catch(() => null)) as { result?: T; error?: unknown } | null
    if (!response.ok || !body || body.error !== undefined || !('result' in body))
      throw new PortalError('err.chainDown', {}, 'chain_error')
    return body.result as T
  }
}

export const GATEWAY_ROLE = keccak256(toHex('GATEWAY_ROLE'))

export const SCOPE_KIND = { record: 0, category: 1, all: 2 } as const

export class Chain {
  readonly config: Config
  private readonly rpc: Rpc

  constructor(config: Config) {
    if (!config.chain_rpc_url) throw new PortalError('err.noChainUrl')
    this.config = config
    this.rpc = new Rpc(config.chain_rpc_url)
  }

  private async view(name: ViewName, args: readonly unknown[], block: Hex | 'latest' = 'latest') {
    const data = encodeFunctionData({ abi: REGISTRY_ABI, functionName: name, args } as never)
    const result = await this.rpc.call<Hex>('eth_call', [{ to: this.config.registry, data }, block])
    return decodeFunctionResult({ abi: REGISTRY_ABI, functionName: name, data: result } as never) as unknown
  }

  async checkChainId(): Promise<void> {
    const id = Number(BigInt(await this.rpc.call<Hex>('eth_chainId', [])))
    if (id !== this.config.chain_id)
      throw new PortalError('err.wrongNetwork', { actual: id, expected: this.config.chain_id })
  }

  async block(tag: Hex | 'latest'): Promise<{ number: number; timestamp: number }> {
    const block = await this.rpc.call<RpcBlock | null>('eth_getBlockByNumber', [tag, false])
    if (!block) throw new PortalError('err.chainDown', {}, 'chain_error')
    return { number: Number(BigInt(block.number)), timestamp: Number(BigInt(block.timestamp)) }
  }

  head(): Promise<{ number: number; timestamp: number }> {
    return this.block('latest')
  }

  async consentOf(
    patient: Hex,
    grantee: Hex,
    kind: number,
    scopeId: Hex,
  ): Promise<{ purposes: number; expiresAt: bigint; block: number }> {
    const block = await this.rpc.call<Hex>('eth_blockNumber', [])
    const [purposes, expiresAt] = (await this.view('consentOf', [patient, grantee, kind, scopeId], block)) as [number, bigint]
    return { purposes: Number(purposes), expiresAt, block: Number(BigInt(block)) }
  }

  async checkpointOf(gateway: Hex): Promise<{ treeSize: number; rootHash: Hex }> {
    const [treeSize, rootHash] = (await this.view('checkpointOf', [gateway])) as [bigint, Hex]
    return { treeSize: Number(treeSize), rootHash }
  }

  async isGateway(account: Hex): Promise<boolean> {
    return (await this.view('hasRole', [GATEWAY_ROLE, account])) as boolean
  }

  async guardianOf(patient: Hex): Promise<Hex> {
    return (await this.view('guardianOf', [patient])) as Hex
  }

  async nonceOf(signer: Hex): Promise<bigint> {
    return (await this.view('nonces', [signer])) as bigint
  }

  async breakGlassUntil(patient: Hex, institution: Hex): Promise<number> {
    return Number((await this.view('breakGlassUntil', [patient, institution])) as bigint)
  }

  async breakGlassReopensAt(patient: Hex, institution: Hex): Promise<number> {
    return Number((await this.view('breakGlassReopensAt', [patient, institution])) as bigint)
  }

  async breakGlass(patient: Hex): Promise<BreakGlassOpening[]> {
    const topics = encodeEventTopics({ abi: REGISTRY_ABI, eventName: 'BreakGlassOpened', args: { patient } })
    const logs = await this.rpc.call<RpcLog[]>('eth_getLogs', [
      { address: this.config.registry, topics, fromBlock: toHex(this.config.deploy_block), toBlock: 'latest' },
    ])
    const result: BreakGlassOpening[] = []
    for (const log of logs) {
      const { args } = decodeEventLog({ abi: REGISTRY_ABI, eventName: 'BreakGlassOpened', data: log.data, topics: log.topics })
      const block = await this.block(log.blockNumber)
      result.push({
        institution: args.institution,
        openedAt: block.timestamp,
        until: Number(args.until),
        currentUntil: await this.breakGlassUntil(patient, args.institution),
        reasonHash: args.reasonHash,
        block: block.number,
      })
    }
    return result
  }

  /** Every account that ever held GATEWAY_ROLE (from RoleGranted logs), with whether it
   * holds it now, its last anchored checkpoint, read from the chain. */
  async federation(): Promise<{ gateway: Hex; member: boolean; treeSize: number; rootHash: Hex }[]> {
    const topics = encodeEventTopics({ abi: REGISTRY_ABI, eventName: 'RoleGranted', args: { role: GATEWAY_ROLE } })
    const logs = await this.rpc.call<RpcLog[]>('eth_getLogs', [
      { address: this.config.registry, topics, fromBlock: toHex(this.config.deploy_block), toBlock: 'latest' },
    ])
    const accounts = new Set<Hex>()
    for (const log of logs) {
      const { args } = decodeEventLog({ abi: REGISTRY_ABI, eventName: 'RoleGranted', data: log.data, topics: log.topics })
      accounts.add(args.account)
    }
    const out = []
    for (const gateway of accounts) {
      const [member, checkpoint] = await Promise.all([this.isGateway(gateway), this.checkpointOf(gateway)])
      out.push({ gateway, member, ...checkpoint })
    }
    return out
  }

  /** The custody federation in force (threshold, members, custody keys, URLs). */
  async custodyFederation(): Promise<CustodyFederation> {
    const [threshold, custodySet, gateways, custodyKeys, urls] = (await this.view('federation', [])) as [
      number, Hex, readonly Hex[], readonly Hex[], readonly string[],
    ]
    return {
      threshold: Number(threshold),
      custodySet,
      members: gateways.map((gateway, i) => ({ gateway, custodyKey: custodyKeys[i], url: urls[i] })),
    }
  }

  /** A registered record's fields, as the chain holds them (patient is zero when unknown). */
  async recordOf(recordId: Hex): Promise<ChainRecord> {
    const r = (await this.view('recordOf', [recordId])) as {
      patient: Hex; issuedAt: bigint; centre: Hex; category: Hex; contentDigest: Hex
    }
    return { patient: r.patient, issuedAt: Number(r.issuedAt), centre: r.centre, category: r.category, contentDigest: r.contentDigest }
  }

  closeBreakGlassData(patient: Hex, institution: Hex): Hex {
    return encodeFunctionData({ abi: REGISTRY_ABI, functionName: 'closeBreakGlass', args: [patient, institution] })
  }

  async waitForReceipt(hash: Hex): Promise<{ block: number; ok: boolean }> {
    const until = Date.now() + 30_000
    while (Date.now() < until) {
      const receipt = await this.rpc.call<{ blockNumber: Hex; status: Hex } | null>('eth_getTransactionReceipt', [hash])
      if (receipt) return { block: Number(BigInt(receipt.blockNumber)), ok: receipt.status === '0x1' }
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
    throw new PortalError('err.chainDown', {}, 'receipt_timeout')
  }
}

export interface BreakGlassOpening {
  institution: Hex
  openedAt: number
  until: number
  currentUntil: number
  reasonHash: Hex
  block: number
}

export interface CustodyFederation {
  threshold: number
  custodySet: Hex
  members: { gateway: Hex; custodyKey: Hex; url: string }[]
}

export interface ChainRecord {
  patient: Hex
  issuedAt: number
  centre: Hex
  category: Hex
  contentDigest: Hex
}
