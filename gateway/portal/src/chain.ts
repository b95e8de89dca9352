// Reads the chain directly from the browser, at the RPC URL named in /portal/config.json,
// against the registry address and chain id it names: the gateway's API answers are checked
// against these reads (consentOf after a revoke, checkpointOf for every proof).
import {
  createPublicClient,
  encodeFunctionData,
  http,
  keccak256,
  parseAbi,
  toHex,
  type Hex,
  type PublicClient,
} from 'viem'
import type { Config } from './api'
import { PortalError } from './errors'

export const REGISTRY_ABI = parseAbi([
  'function consentOf(address patient, address grantee, uint8 scopeKind, bytes32 scopeId) view returns (uint32 purposes, uint64 expiresAt)',
  'function checkpointOf(address gateway) view returns (uint64 treeSize, bytes32 rootHash)',
  'function hasRole(bytes32 role, address account) view returns (bool)',
  'function nonces(address owner) view returns (uint256)',
  'function breakGlassUntil(address patient, address institution) view returns (uint64)',
  'function breakGlassReopensAt(address patient, address institution) view returns (uint64)',
  'function closeBreakGlass(address patient, address institution)',
  'event BreakGlassOpened(address indexed patient, address indexed institution, uint64 until, bytes32 reasonHash)',
  'event BreakGlassClosed(address indexed patient, address indexed institution, address closedBy, uint64 reopensAt)',
])

export const GATEWAY_ROLE = keccak256(toHex('GATEWAY_ROLE'))

export const SCOPE_KIND = { record: 0, category: 1, all: 2 } as const

export class Chain {
  readonly client: PublicClient
  readonly config: Config

  constructor(config: Config) {
    if (!config.chain_rpc_url) throw new PortalError('err.noChainUrl')
    this.config = config
    this.client = createPublicClient({
      cacheTime: 0, // every answer is a fresh read: a confirmation must see the latest block
      transport: http(config.chain_rpc_url, { retryCount: 1, timeout: 10_000 }),
    })
  }

  private async guard<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work()
    } catch (exc) {
      if (exc instanceof PortalError) throw exc
      throw new PortalError('err.chainDown', {}, 'chain_unreachable')
    }
  }

  async checkChainId(): Promise<void> {
    const id = await this.guard(() => this.client.getChainId())
    if (id !== this.config.chain_id)
      throw new PortalError('err.wrongNetwork', { actual: id, expected: this.config.chain_id })
  }

  async head(): Promise<{ number: number; timestamp: number }> {
    const block = await this.guard(() => this.client.getBlock({ blockTag: 'latest' }))
    return { number: Number(block.number), timestamp: Number(block.timestamp) }
  }

  async consentOf(
    patient: Hex,
    grantee: Hex,
    kind: number,
    scopeId: Hex,
  ): Promise<{ purposes: number; expiresAt: bigint; block: number }> {
    return this.guard(async () => {
      const blockNumber = await this.client.getBlockNumber()
      const [purposes, expiresAt] = await this.client.readContract({
        address: this.config.registry,
        abi: REGISTRY_ABI,
        functionName: 'consentOf',
        args: [patient, grantee, kind, scopeId],
        blockNumber,
      })
      return { purposes: Number(purposes), expiresAt, block: Number(blockNumber) }
    })
  }

  async checkpointOf(gateway: Hex): Promise<{ treeSize: number; rootHash: Hex }> {
    return this.guard(async () => {
      const [treeSize, rootHash] = await this.client.readContract({
        address: this.config.registry,
        abi: REGISTRY_ABI,
        functionName: 'checkpointOf',
        args: [gateway],
      })
      return { treeSize: Number(treeSize), rootHash }
    })
  }

  async isGateway(account: Hex): Promise<boolean> {
    return this.guard(() =>
      this.client.readContract({
        address: this.config.registry,
        abi: REGISTRY_ABI,
        functionName: 'hasRole',
        args: [GATEWAY_ROLE, account],
      }),
    )
  }

  async nonceOf(signer: Hex): Promise<bigint> {
    return this.guard(() =>
      this.client.readContract({
        address: this.config.registry,
        abi: REGISTRY_ABI,
        functionName: 'nonces',
        args: [signer],
      }),
    )
  }

  async breakGlass(patient: Hex): Promise<BreakGlassOpening[]> {
    return this.guard(async () => {
      const opened = await this.client.getContractEvents({
        address: this.config.registry,
        abi: REGISTRY_ABI,
        eventName: 'BreakGlassOpened',
        args: { patient },
        fromBlock: BigInt(this.config.deploy_block),
      })
      const result: BreakGlassOpening[] = []
      for (const log of opened) {
        const institution = log.args.institution as Hex
        const block = await this.client.getBlock({ blockNumber: log.blockNumber })
        const until = await this.breakGlassUntil(patient, institution)
        result.push({
          institution,
          openedAt: Number(block.timestamp),
          until: Number(log.args.until),
          currentUntil: until,
          reasonHash: log.args.reasonHash as Hex,
          block: Number(log.blockNumber),
        })
      }
      return result
    })
  }

  async breakGlassUntil(patient: Hex, institution: Hex): Promise<number> {
    return this.guard(async () =>
      Number(
        await this.client.readContract({
          address: this.config.registry,
          abi: REGISTRY_ABI,
          functionName: 'breakGlassUntil',
          args: [patient, institution],
        }),
      ),
    )
  }

  async breakGlassReopensAt(patient: Hex, institution: Hex): Promise<number> {
    return this.guard(async () =>
      Number(
        await this.client.readContract({
          address: this.config.registry,
          abi: REGISTRY_ABI,
          functionName: 'breakGlassReopensAt',
          args: [patient, institution],
        }),
      ),
    )
  }

  closeBreakGlassData(patient: Hex, institution: Hex): Hex {
    return encodeFunctionData({
      abi: REGISTRY_ABI,
      functionName: 'closeBreakGlass',
      args: [patient, institution],
    })
  }

  async waitForReceipt(hash: Hex): Promise<{ block: number; ok: boolean }> {
    return this.guard(async () => {
      const receipt = await this.client.waitForTransactionReceipt({ hash, timeout: 30_000 })
      return { block: Number(receipt.blockNumber), ok: receipt.status === 'success' }
    })
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
