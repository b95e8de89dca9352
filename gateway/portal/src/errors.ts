// Every failure becomes one plain sentence with what to do next (i18n key + parameters).
export class PortalError extends Error {
  readonly key: string
  readonly params: Record<string, string | number>
  readonly code: string

  constructor(key: string, params: Record<string, string | number> = {}, code = key) {
    super(key)
    this.key = key
    this.params = params
    this.code = code
  }
}

/** The sentence for a gateway error answer (``{"error": {"code", "message", "details"}}``). */
export function fromGateway(
  status: number,
  body: unknown,
  retryAfter: string | null,
): PortalError {
  const error = (body as { error?: { code?: string; details?: Record<string, unknown> } })?.error
  const code = error?.code ?? `http_${status}`
  const details = error?.details ?? {}
  const limit = Number(details.quota ?? details.rate ?? 0)
  const wait = Number(retryAfter ?? details.retry_after_s ?? 60)
  const minutes = Math.max(1, Math.ceil((Number.isFinite(wait) ? wait : 60) / 60))
  if (status === 401 && !code.startsWith('siwe_')) return new PortalError('err.session', {}, code)
  switch (code) {
    case 'relay_quota_exceeded':
      return new PortalError('err.quota', { limit, minutes }, code)
    case 'relay_rate_limited':
    case 'rate_limited':
    case 'too_many_requests':
      return new PortalError('err.rate', {}, code)
    case 'relay_gas_cap_exceeded':
      return new PortalError('err.gasCap', {}, code)
    case 'consent_denied':
      return new PortalError('err.noConsent', {}, code)
    case 'chain_unavailable':
    case 'chain_stale':
    case 'service_unavailable':
    case 'database_unavailable':
    case 'upstream_failed':
      return new PortalError('err.chainDown', {}, code)
    case 'contract_consent_not_found':
      return new PortalError('err.notFound', {}, code)
    case 'contract_expiry_in_past':
      return new PortalError('err.expiryPast', {}, code)
    case 'contract_invalid_account_nonce':
      return new PortalError('err.nonce', {}, code)
    case 'forbidden':
      return new PortalError('err.forbidden', {}, code)
    case 'invalid_request':
      return new PortalError('err.badInput', {}, code)
  }
  if (code.startsWith('siwe_')) return new PortalError('err.siwe', { code }, code)
  if (status === 503) return new PortalError('err.chainDown', {}, code)
  return new PortalError('err.other', { code }, code)
}

/** A wallet (EIP-1193) error: 4001 is the user saying no. */
export function fromWallet(exc: unknown): PortalError {
  if (exc instanceof PortalError) return exc
  const code = (exc as { code?: number })?.code
  if (code === 4001) return new PortalError('err.rejected', {}, 'wallet_rejected')
  return new PortalError('err.other', { code: `wallet ${String(code ?? 'error')}` }, 'wallet_error')
}
