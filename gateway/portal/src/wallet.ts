// An injected EIP-1193 wallet (MetaMask-style): accounts, chain, personal_sign for SIWE,
// eth_signTypedData_v4 for grants and revokes, eth_sendTransaction for a direct call.
import { getAddress, numberToHex, type Hex } from 'viem'
import { createSiweMessage } from 'viem/siwe'
import { call, setSession, type Config } from './api'
import { PortalError, fromWallet } from './errors'

interface Eip1193 {
  request(args: { method: string; params?: unknown[] }): Promise<unknown>
}

let builtIn: Eip1193 | null = null

/** Use an unlocked built-in key instead of an injected wallet (null: the wallet again). */
export function useBuiltInKey(key: Eip1193 | null): void {
  builtIn = key
}

export function usingBuiltInKey(): boolean {
  return builtIn !== null
}

function provider(): Eip1193 {
  if (builtIn) return builtIn
  const injected = (window as unknown as { ethereum?: Eip1193 }).ethereum
  if (!injected || typeof injected.request !== 'function') throw new PortalError('err.noWallet')
  return injected
}

async function request<T>(method: string, params?: unknown[]): Promise<T> {
  try {
    return (await provider().request({ method, params })) as T
  } catch (exc) {
    throw fromWallet(exc)
  }
}

/** The wallet must be on the portal's chain (from /portal/config.json); asks it to switch. */
export async function ensureChain(config: Config): Promise<void> {
  const actual = Number(BigInt(await request<string>('eth_chainId')))
  if (actual === config.chain_id) return
  try {
    await provider().request({
      method: 'wallet_switchEthereumChain',
      params: [{ chainId: numberToHex(config.chain_id) }],
    })
  } catch {
    // a wallet that cannot switch: say so below
  }
  const now = Number(BigInt(await request<string>('eth_chainId')))
  if (now !== config.chain_id)
    throw new PortalError('err.wrongNetwork', { actual: now, expected: config.chain_id })
}

interface NoncePublic {
  nonce: string
  domain: string
  uri: string
  chain_id: number | null
}

interface SessionPublic {
  token: string
  address: string
  expires_at: number
}

/** SIWE (EIP-4361): the nonce from the gateway, the domain and URI of this page's origin.
 * The gateway checks them; this page refuses first when the gateway would sign in for another
 * origin, so the wallet is never asked to sign a message for a domain it is not on. */
export async function signIn(config: Config): Promise<Hex> {
  const accounts = await request<string[]>('eth_requestAccounts')
  if (!accounts.length) throw new PortalError('err.noWallet')
  const address = getAddress(accounts[0])
  await ensureChain(config)
  const nonce = await call<NoncePublic>('POST', '/v1/auth/nonce')
  const domain = window.location.host
  const uri = window.location.origin
  if (nonce.domain.toLowerCase() !== domain.toLowerCase() || nonce.uri !== uri)
    throw new PortalError(
      'err.domain',
      { actual: domain, expected: nonce.domain, uri: nonce.uri },
      'siwe_domain_mismatch',
    )
  if (nonce.chain_id !== null && nonce.chain_id !== config.chain_id)
    throw new PortalError('err.wrongNetwork', { actual: nonce.chain_id, expected: config.chain_id })
  const now = new Date()
  const message = createSiweMessage({
    domain,
    address,
    statement: 'Sign in to Consent Ledger',
    uri,
    version: '1',
    chainId: config.chain_id,
    nonce: nonce.nonce,
    issuedAt: now,
    expirationTime: new Date(now.getTime() + 3600_000),
  })
  const signature = await request<Hex>('personal_sign', [toHexUtf8(message), address])
  const session = await call<SessionPublic>('POST', '/v1/auth/login', { message, signature })
  setSession(session.token)
  return getAddress(session.address)
}

function toHexUtf8(text: string): Hex {
  const bytes = new TextEncoder().encode(text)
  return `0x${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`
}

export async function signTypedData(address: Hex, typedData: unknown): Promise<Hex> {
  return request<Hex>('eth_signTypedData_v4', [address, JSON.stringify(typedData)])
}

export async function sendTransaction(from: Hex, to: Hex, data: Hex): Promise<Hex> {
  return request<Hex>('eth_sendTransaction', [{ from, to, data }])
}
