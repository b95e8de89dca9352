// The gateway's API (same origin). The session token lives in this module's memory only:
// never in localStorage, sessionStorage, a cookie or IndexedDB; a reload signs you out.
import { PortalError, fromGateway } from './errors'

let token: string | null = null
let onSessionEnd: () => void = () => {}

export function setSession(value: string | null): void {
  token = value
}

export function hasSession(): boolean {
  return token !== null
}

export function whenSessionEnds(callback: () => void): void {
  onSessionEnd = callback
}

export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  if (token) headers.Authorization = `Bearer ${token}`
  let response: Response
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
    })
  } catch {
    throw new PortalError('err.gatewayDown', {}, 'gateway_unreachable')
  }
  let parsed: unknown = null
  try {
    parsed = await response.json()
  } catch {
    parsed = null
  }
  if (!response.ok && response.status !== 202) {
    const error = fromGateway(response.status, parsed, response.headers.get('Retry-After'))
    if (error.key === 'err.session') {
      token = null
      onSessionEnd()
    }
    throw error
  }
  return parsed as T
}

/** A multipart upload with progress (XMLHttpRequest: fetch reports no upload progress). */
export function upload<T>(path: string, form: FormData, progress: (fraction: number) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest()
    xhr.open('POST', path)
    xhr.setRequestHeader('Accept', 'application/json')
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`)
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) progress(e.loaded / e.total)
    }
    xhr.onerror = () => reject(new PortalError('err.gatewayDown', {}, 'gateway_unreachable'))
    xhr.onload = () => {
      let parsed: unknown = null
      try {
        parsed = JSON.parse(xhr.responseText)
      } catch {
        parsed = null
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        progress(1)
        resolve(parsed as T)
        return
      }
      const error = fromGateway(xhr.status, parsed, xhr.getResponseHeader('Retry-After'))
      if (error.key === 'err.session') {
        token = null
        onSessionEnd()
      }
      reject(error)
    }
    xhr.send(form)
  })
}

export interface Config {
  chain_id: number
  registry: `0x${string}`
  deploy_block: number
  chain_rpc_url: string | null
  siwe_domain: string
  siwe_uri: string
}

export interface RecordPublic {
  record_id: `0x${string}`
  patient: string
  centre: string
  category: string
  category_id: `0x${string}`
  issued_at: number
  block_number: number | null
}

export interface ConsentPublic {
  patient: `0x${string}`
  grantee: `0x${string}`
  scope_kind: 'record' | 'category' | 'all'
  scope_id: `0x${string}`
  purposes: number[]
  purpose_names: string[]
  expires_at: number
  active: boolean
}

export interface ConsentsPublic {
  block_number: number
  granted: ConsentPublic[]
  received: ConsentPublic[]
}

export interface Checkpoint {
  tree_size: number
  root_hash: `0x${string}`
  gateway: `0x${string}`
  tx_hash: string
  block_number: number
}

export interface AccessEntry {
  index: number
  leaf: string
  leaf_hash: string
  entry: Record<string, unknown>
  inclusion_proof: `0x${string}`[] | null
}

export interface AccessPage {
  checkpoint: Checkpoint | null
  log_size: number
  entries: AccessEntry[]
}
