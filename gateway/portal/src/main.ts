// The patient portal: sign-in (SIWE with an injected wallet), my records and who can read
// them, grant, one-tap revoke checked on the chain, who read my records with proofs verified
// here, break-glass openings, consent receipts; under threshold custody, opening one's own
// record and a centre's upload (custody/, loaded on first use). No inline script, no CDN, no
// stored secrets.
import './style.css'
import { getAddress, isAddress, padHex, toHex, type Hex } from 'viem'
import {
  call,
  hasSession,
  setSession,
  whenSessionEnds,
  type AccessPage,
  type Config,
  type ConsentPublic,
  type ConsentsPublic,
  type RecordPublic,
} from './api'
import { Chain, SCOPE_KIND, type BreakGlassOpening } from './chain'
import { PortalError } from './errors'
import {
  categoryName,
  fmtDate,
  fmtDay,
  fmtNumber,
  lang,
  purposeName,
  setLang,
  t,
  type Lang,
} from './i18n'
import { leafHash } from './merkle'
import { verifyInclusionHex } from './merkle'
import { consentR5, download, kantaraReceipt, categoryOf } from './receipts'
import { purposesOfMask, readableRows, typedData, type ConsentMessage } from './typed'
import { ensureChain, sendTransaction, signIn, signTypedData, useBuiltInKey } from './wallet'
import type { LocalKey } from './localkey'
import { storedAddress } from './keystore'

type Child = Node | string | null | undefined | false
type Props = Record<string, unknown>

function h(tag: string, props: Props = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue
    if (key === 'class') el.className = String(value)
    else if (key.startsWith('on') && typeof value === 'function')
      el.addEventListener(key.slice(2).toLowerCase(), value as EventListener)
    else if (value === true) el.setAttribute(key, '')
    else el.setAttribute(key, String(value))
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue
    el.append(typeof child === 'string' ? document.createTextNode(child) : child)
  }
  return el
}

/** A translated sentence with an address element where its {address} is. */
function withAddr(key: string, address: string): Child[] {
  const [before, after = ''] = t(key, { address: '\u0000' }).split('\u0000')
  return [before, addr(address), after]
}

const short = (a: string): string => `${a.slice(0, 6)}…${a.slice(-4)}`
const addr = (a: string): HTMLElement =>
  h('span', { class: 'addr', title: a, 'data-address': a }, short(a))

interface State {
  config: Config | null
  chain: Chain | null
  address: Hex | null
  message: { kind: 'error' | 'ok'; text: string } | null
  busy: boolean
  localKey: LocalKey | null
}

const state: State = {
  config: null,
  chain: null,
  address: null,
  message: null,
  busy: false,
  localKey: null,
}
const PAGES = ['records', 'grant', 'consents', 'who-read', 'upload', 'auditor'] as const
type Page = (typeof PAGES)[number]

function page(): Page {
  const name = window.location.hash.replace(/^#\/?/, '')
  return (PAGES as readonly string[]).includes(name) ? (name as Page) : 'records'
}

function say(kind: 'error' | 'ok', text: string): void {
  state.message = { kind, text }
  const box = document.getElementById('status')
  if (box) renderStatus(box)
}

function sayError(exc: unknown): void {
  if (exc instanceof PortalError) say('error', t(exc.key, exc.params))
  else {
    console.error(exc)
    say('error', t('err.other', { code: exc instanceof Error ? exc.name : 'error' }))
  }
}

function renderStatus(box: HTMLElement): void {
  box.replaceChildren()
  box.className = 'status'
  if (!state.message) return
  box.classList.add(state.message.kind)
  box.append(h('p', { 'data-testid': `message-${state.message.kind}` }, state.message.text))
}

function languageSwitch(): HTMLElement {
  const select = h(
    'select',
    {
      id: 'lang',
      onchange: (e: Event) => {
        const value = (e.target as HTMLSelectElement).value as Lang
        setLang(value)
        localStorage.setItem('portal.lang', value) // a preference, not a secret
        void render()
      },
    },
    h('option', { value: 'en', selected: lang() === 'en' }, 'English'),
    h('option', { value: 'zh-CN', selected: lang() === 'zh-CN' }, '简体中文'),
  )
  return h('div', { class: 'lang' }, h('label', { for: 'lang' }, t('language')), select)
}

function shell(content: HTMLElement): HTMLElement {
  const nav = state.address
    ? h(
        'nav',
        { 'aria-label': t('title') },
        h(
          'ul',
          {},
          ...PAGES.map((p) =>
            h(
              'li',
              {},
              h(
                'a',
                {
                  href: `#/${p}`,
                  'aria-current': page() === p ? 'page' : undefined,
                },
                t(`nav.${p === 'who-read' ? 'whoRead' : p}`),
              ),
            ),
          ),
          h(
            'li',
            {},
            h(
              'button',
              {
                type: 'button',
                class: 'link',
                onclick: () => {
                  setSession(null)
                  useBuiltInKey(null)
                  state.localKey = null
                  state.address = null
                  state.message = null
                  void render()
                },
              },
              t('nav.signOut'),
            ),
          ),
        ),
      )
    : null
  const status = h('div', { id: 'status', role: 'status', 'aria-live': 'polite' })
  renderStatus(status)
  return h(
    'div',
    { class: 'shell' },
    h(
      'header',
      {},
      h('div', { class: 'brand' }, h('p', { class: 'title' }, t('title')), h('p', { class: 'tagline' }, t('tagline'))),
      languageSwitch(),
      state.address
        ? h('p', { class: 'who', 'data-testid': 'signed-in' }, ...withAddr('signin.signedInAs', state.address))
        : null,
      state.localKey
        ? h(
            'button',
            {
              type: 'button',
              id: 'export-key',
              onclick: async () => {
                try {
                  download(`consent-key-${state.localKey!.address}.json`, await state.localKey!.keyfile())
                } catch (exc) {
                  sayError(exc)
                }
              },
            },
            t('local.export'),
          )
        : null,
    ),
    nav,
    h('main', { id: 'main' }, status, content),
  )
}

function heading(key: string): HTMLElement {
  return h('h1', { tabindex: '-1' }, t(key))
}

async function render(): Promise<void> {
  const app = document.getElementById('app')!
  if (!state.config) return
  if (!state.address) {
    app.replaceChildren(shell(signInPage()))
    return
  }
  const content = h('section', { 'aria-busy': 'true' }, heading(headingOf(page())))
  app.replaceChildren(shell(content))
  try {
    const body = await PAGE_RENDERERS[page()]()
    content.replaceChildren(
      heading(headingOf(page())),
      ...body.filter((c): c is Node | string => c !== null && c !== undefined && c !== false),
    )
  } catch (exc) {
    content.replaceChildren(heading(headingOf(page())))
    sayError(exc)
  }
  content.removeAttribute('aria-busy')
}

const headingOf = (p: Page): string =>
  ({
    records: 'records.heading',
    grant: 'grant.heading',
    consents: 'consents.heading',
    'who-read': 'who.heading',
    upload: 'upload.heading',
    auditor: 'audit.heading',
  })[p]

// ----------------------------------------------------------------------------- sign-in

function signInPage(): HTMLElement {
  const rpc = state.config?.chain_rpc_url ?? '—'
  const button = h(
    'button',
    {
      type: 'button',
      id: 'sign-in',
      class: 'primary',
      onclick: async () => {
        if (state.busy) return
        state.busy = true
        say('ok', t('signin.busy'))
        try {
          if (!state.chain) throw new PortalError('err.noChainUrl')
          await state.chain.checkChainId()
          state.address = await signIn(state.config!)
          state.message = null
          if (!window.location.hash) window.location.hash = '#/records'
          await render()
        } catch (exc) {
          sayError(exc)
        } finally {
          state.busy = false
        }
      },
    },
    t('signin.button'),
  )
  const local = h('section', { 'aria-labelledby': 'local-heading', class: 'local' })
  void builtInKeySection(local)
  return h(
    'section',
    {},
    heading('signin.heading'),
    h('p', {}, t('signin.intro')),
    button,
    local,
    h('p', { class: 'fine' }, t('signin.trust', { rpc })),
  )
}

async function builtInKeySection(section: HTMLElement): Promise<void> {
  const stored = await storedAddress().catch(() => null)
  const field = (id: string, label: string): HTMLElement =>
    h('div', { class: 'field' }, h('label', { for: id }, label),
      h('input', { id, type: 'password', autocomplete: stored ? 'current-password' : 'new-password' }))
  const value = (id: string): string => (section.querySelector(`#${id}`) as HTMLInputElement).value
  const start = async (make: () => Promise<LocalKey>): Promise<void> => {
    if (state.busy) return
    state.busy = true
    try {
      if (!state.chain) throw new PortalError('err.noChainUrl')
      await state.chain.checkChainId()
      const key = await make()
      useBuiltInKey(key)
      state.localKey = key
      state.address = await signIn(state.config!)
      state.message = null
      if (!window.location.hash) window.location.hash = '#/records'
      await render()
    } catch (exc) {
      useBuiltInKey(null)
      state.localKey = null
      sayError(exc)
    } finally {
      state.busy = false
    }
  }
  const form = h('form', { novalidate: true }) as HTMLFormElement
  if (stored) {
    form.append(
      h('p', {}, ...withAddr('local.stored', stored)),
      field('passphrase', t('local.passphrase')),
      h('button', { type: 'submit', id: 'unlock' }, t('local.unlock')),
    )
    form.addEventListener('submit', (e) => {
      e.preventDefault()
      void start(async () => (await import('./localkey')).unlockKey(value('passphrase'), state.config!.chain_id))
    })
  } else {
    const importer = h('input', { id: 'keyfile', type: 'file', accept: '.json,application/json' }) as HTMLInputElement
    importer.addEventListener('change', () => {
      const file = importer.files?.[0]
      if (!file) return
      void start(async () =>
        (await import('./localkey')).importKeyfile(await file.text(), value('new-passphrase'), state.config!.chain_id),
      )
    })
    form.append(
      field('new-passphrase', t('local.passphrase')),
      field('new-passphrase-2', t('local.confirm')),
      h('button', { type: 'submit', id: 'create-key' }, t('local.create')),
      h('div', { class: 'field' }, h('label', { for: 'keyfile' }, t('local.import')), importer),
    )
    form.addEventListener('submit', (e) => {
      e.preventDefault()
      void start(async () =>
        (await import('./localkey')).createKey(value('new-passphrase'), value('new-passphrase-2'), state.config!.chain_id),
      )
    })
  }
  section.replaceChildren(h('h2', { id: 'local-heading' }, t('local.heading')), h('p', { class: 'fine' }, t('local.intro')), form)
}

// ----------------------------------------------------------------------------- data

async function loadRecords(): Promise<RecordPublic[]> {
  const page = await call<{ records: RecordPublic[] }>('GET', '/v1/records?limit=200')
  return page.records.filter((r) => r.patient.toLowerCase() === state.address!.toLowerCase())
}

const loadConsents = (): Promise<ConsentsPublic> => call<ConsentsPublic>('GET', '/v1/consents')

function covers(c: ConsentPublic, r: RecordPublic): boolean {
  if (!c.active) return false
  if (c.scope_kind === 'all') return true
  if (c.scope_kind === 'category') return c.scope_id.toLowerCase() === r.category_id.toLowerCase()
  return c.scope_id.toLowerCase() === r.record_id.toLowerCase()
}

function scopeText(c: ConsentPublic): string {
  if (c.scope_kind === 'all') return t('grant.scope.all')
  if (c.scope_kind === 'category') return `${t('grant.category')}: ${categoryName(categoryOf(c.scope_id))}`
  return `${t('records.record')} ${short(c.scope_id)}`
}

const purposesText = (ids: number[]): string => ids.map(purposeName).join(', ')

function answerText(purposes: number, expiresAt: bigint): string {
  if (purposes === 0) return t('answer.none')
  return t('answer.some', {
    purposes: purposesText(purposesOfMask(purposes)),
    expires: fmtDate(Number(expiresAt)),
  })
}

// ----------------------------------------------------------------------------- records

async function recordsPage(): Promise<Child[]> {
  const chain = state.chain!
  const [records, consents, head] = await Promise.all([loadRecords(), loadConsents(), chain.head()])
  const openings = await chain.breakGlass(state.address!)
  const open = openings.filter((o) => o.currentUntil > head.timestamp)
  if (!records.length) return [h('p', {}, t('records.none')), sharedWithMe()]
  const rows = records.map((r) => {
    const readers = consents.granted.filter((c) => covers(c, r))
    const who = h(
      'ul',
      { class: 'readers' },
      ...readers.map((c) =>
        h('li', { 'data-testid': 'reader' }, addr(c.grantee), ` — ${purposesText(c.purposes)}, ${fmtDay(c.expires_at)}`),
      ),
      ...open.map((o) =>
        h('li', { class: 'emergency' }, `${t('basis.emergency')}: `, addr(o.institution), ` — ${fmtDate(o.currentUntil)}`),
      ),
    )
    if (!readers.length && !open.length) who.append(h('li', {}, t('records.onlyYou')))
    return h(
      'tr',
      { 'data-record': r.record_id },
      h('td', { 'data-label': t('records.category') }, categoryName(r.category)),
      h('td', { 'data-label': t('records.centre') }, addr(r.centre)),
      h('td', { 'data-label': t('records.issued') }, fmtDay(r.issued_at)),
      h('td', { 'data-label': t('records.readers') }, who),
      h(
        'td',
        { class: 'actions' },
        state.localKey
          ? h(
              'button',
              {
                type: 'button',
                'data-testid': 'open-record',
                'aria-label': t('records.openLabel', { date: fmtDay(r.issued_at) }),
                onclick: () => void openOwnRecord(r),
              },
              t('records.open'),
            )
          : null,
      ),
    )
  })
  return [
    h(
      'table',
      { class: 'cards' },
      h('caption', { class: 'visually-hidden' }, t('records.heading')),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col' }, t('records.category')),
          h('th', { scope: 'col' }, t('records.centre')),
          h('th', { scope: 'col' }, t('records.issued')),
          h('th', { scope: 'col' }, t('records.readers')),
          h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, t('records.open'))),
        ),
      ),
      h('tbody', {}, ...rows),
    ),
    state.localKey ? null : h('p', { class: 'fine', 'data-testid': 'open-needs-key' }, t('records.openWallet')),
    sharedWithMe(),
  ]
}

/** A grantee's way in: a record id someone shared, opened for the purpose chosen here. */
function sharedWithMe(): HTMLElement | null {
  if (!state.localKey) return null
  const form = h(
    'form',
    { novalidate: true, class: 'shared' },
    h('h2', { id: 'shared-heading' }, t('shared.heading')),
    h('div', { class: 'field' }, h('label', { for: 'shared-record' }, t('shared.record')),
      h('input', { id: 'shared-record', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: '0x…' })),
    h('div', { class: 'field' }, h('label', { for: 'shared-purpose' }, t('who.purpose')),
      h('select', { id: 'shared-purpose' }, ...[0, 1, 2, 3, 4].map((p) => h('option', { value: String(p) }, purposeName(p))))),
    h('button', { type: 'submit', id: 'shared-open' }, t('records.open')),
  ) as HTMLFormElement
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    const id = (form.querySelector('#shared-record') as HTMLInputElement).value.trim()
    const purpose = (form.querySelector('#shared-purpose') as HTMLSelectElement).value
    if (!/^0x[0-9a-fA-F]{64}$/.test(id)) return sayError(new PortalError('err.badRecordId'))
    void openRecordById(id as Hex, purpose)
  })
  return h('section', { 'aria-labelledby': 'shared-heading' }, form)
}

/** Open one's own record under threshold custody (built-in key only: see custody/open.ts). */
function openOwnRecord(r: RecordPublic): Promise<void> {
  return openRecordById(r.record_id, 'treatment')
}

async function openRecordById(recordId: Hex, purpose: string): Promise<void> {
  if (state.busy || !state.localKey) return
  state.busy = true
  try {
    const { openRecord } = await import('./custody/open')
    const opened = await openRecord(state.config!, state.chain!, state.localKey, recordId, purpose, (step, params) =>
      say('ok', t(step, params)),
    )
    const blob = new Blob([opened.document as BlobPart], { type: 'application/octet-stream' })
    const url = URL.createObjectURL(blob)
    const a = h('a', { href: url, download: `record-${recordId.slice(2, 10)}.bin` })
    document.body.append(a)
    a.click()
    a.remove()
    setTimeout(() => URL.revokeObjectURL(url), 10_000)
    say('ok', opened.bad.length ? t('open.doneBad', { gateways: opened.bad.join(', ') }) : t('open.done', { n: opened.signIns }))
  } catch (exc) {
    sayError(exc)
  } finally {
    state.busy = false
  }
}

// ----------------------------------------------------------------------------- relay

interface RelayAnswer {
  tx_hash: string
  block_number?: number
  status: 'mined' | 'pending'
}

async function relay(action: 'grant' | 'revoke', message: ConsentMessage): Promise<RelayAnswer> {
  const data = typedData(state.config!, action, message)
  await ensureChain(state.config!)
  const signature = await signTypedData(state.address!, data)
  let answer = await call<RelayAnswer>('POST', '/v1/consents', {
    action,
    request: data.message,
    signature,
  })
  const until = Date.now() + 60_000
  while (answer.status === 'pending' && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 500))
    answer = await call<RelayAnswer>('GET', `/v1/consents/relays/${answer.tx_hash}`)
  }
  return answer
}

async function baseMessage(
  grantee: Hex,
  kind: number,
  scopeId: Hex,
  patient: Hex = state.address!,
): Promise<ConsentMessage> {
  const chain = state.chain!
  const [head, nonce] = await Promise.all([chain.head(), chain.nonceOf(state.address!)])
  return {
    patient,
    grantee,
    scopeKind: kind,
    scopeId,
    signer: state.address!,
    nonce: Number(nonce),
    deadline: head.timestamp + 3600,
  }
}

// ----------------------------------------------------------------------------- grant

const CATEGORIES = ['checkup', 'laboratory', 'imaging', 'prescription']

async function grantPage(): Promise<Child[]> {
  const records = await loadRecords()
  const categories = [...new Set([...CATEGORIES, ...records.map((r) => r.category)])]
  const review = h('div', { id: 'review' })
  const field = (id: string, label: string, control: HTMLElement, help?: string): HTMLElement =>
    h(
      'div',
      { class: 'field' },
      h('label', { for: id }, label),
      control,
      help ? h('p', { class: 'help', id: `${id}-help` }, help) : null,
    )
  const scopeRadios = h(
    'fieldset',
    {},
    h('legend', {}, t('grant.scope')),
    ...(['record', 'category', 'all'] as const).map((kind) =>
      h(
        'label',
        { class: 'choice' },
        h('input', { type: 'radio', name: 'scope', value: kind, checked: kind === 'category' }),
        ` ${t(`grant.scope.${kind}`)}`,
      ),
    ),
  )
  const purposes = h(
    'fieldset',
    {},
    h('legend', {}, t('grant.purpose')),
    ...[0, 1, 2, 3, 4].map((p) =>
      h(
        'label',
        { class: 'choice' },
        h('input', { type: 'checkbox', name: 'purpose', value: String(p), checked: p === 0 }),
        ` ${purposeName(p)}`,
      ),
    ),
  )
  const form = h(
    'form',
    { id: 'grant-form', novalidate: true },
    field(
      'acting-for',
      t('guardian.actingFor'),
      h('input', {
        id: 'acting-for',
        name: 'acting-for',
        autocomplete: 'off',
        spellcheck: 'false',
        'aria-describedby': 'acting-for-help',
        placeholder: '0x…',
      }),
      t('guardian.help'),
    ),
    h('p', { id: 'acting-banner', class: 'acting', hidden: true, role: 'note' }),
    field(
      'grantee',
      t('grant.grantee'),
      h('input', {
        id: 'grantee',
        name: 'grantee',
        autocomplete: 'off',
        spellcheck: 'false',
        required: true,
        'aria-describedby': 'grantee-help',
        placeholder: '0x…',
      }),
      t('grant.granteeHelp'),
    ),
    scopeRadios,
    field(
      'record',
      t('grant.record'),
      h(
        'select',
        { id: 'record', name: 'record' },
        ...records.map((r) =>
          h('option', { value: r.record_id }, `${categoryName(r.category)} · ${fmtDay(r.issued_at)} · ${short(r.record_id)}`),
        ),
      ),
    ),
    field(
      'category',
      t('grant.category'),
      h(
        'select',
        { id: 'category', name: 'category' },
        ...categories.map((c) => h('option', { value: c, selected: c === 'laboratory' }, categoryName(c))),
      ),
    ),
    purposes,
    field('expiry', t('grant.expiry'), h('input', { id: 'expiry', name: 'expiry', type: 'number', min: '1', max: '3650', value: '30' })),
    h('button', { type: 'submit', class: 'primary', id: 'grant-review' }, t('grant.review')),
  ) as HTMLFormElement
  // Only the control of the chosen scope is shown (a record, or a category).
  const showScope = (): void => {
    // Acting for a patient: their records are not listed here, so a category or all of them.
    const acting = (form.querySelector('#acting-for') as HTMLInputElement).value.trim() !== ''
    const recordRadio = form.querySelector('input[name=scope][value=record]') as HTMLInputElement
    recordRadio.disabled = acting
    if (acting && recordRadio.checked)
      (form.querySelector('input[name=scope][value=category]') as HTMLInputElement).checked = true
    const kind = (form.querySelector('input[name=scope]:checked') as HTMLInputElement | null)?.value
    form.querySelector('#record')!.parentElement!.hidden = kind !== 'record'
    form.querySelector('#category')!.parentElement!.hidden = kind !== 'category'
  }
  form.addEventListener('change', showScope)
  form.addEventListener('input', showScope)
  showScope()
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    void prepareGrant(form, review)
  })
  return [form, review]
}

async function prepareGrant(form: HTMLFormElement, review: HTMLElement): Promise<void> {
  try {
    const values = new FormData(form)
    const grantee = String(values.get('grantee') ?? '').trim()
    if (!isAddress(grantee, { strict: false })) throw new PortalError('err.badAddress')
    const kindName = String(values.get('scope')) as keyof typeof SCOPE_KIND
    const kind = SCOPE_KIND[kindName]
    const scopeId: Hex =
      kindName === 'record'
        ? (String(values.get('record')) as Hex)
        : kindName === 'category'
          ? padHex(toHex(new TextEncoder().encode(String(values.get('category')))), { dir: 'right', size: 32 })
          : padHex('0x', { size: 32 })
    if (kindName === 'record' && !/^0x[0-9a-fA-F]{64}$/.test(scopeId)) throw new PortalError('err.badInput')
    const mask = values.getAll('purpose').reduce((m, p) => m | (1 << Number(p)), 0)
    if (!mask) throw new PortalError('err.purpose')
    const days = Math.max(1, Math.min(3650, Number(values.get('expiry') || 30)))
    const actingFor = String(values.get('acting-for') ?? '').trim()
    let patient = state.address!
    const banner = form.querySelector('#acting-banner') as HTMLElement
    banner.hidden = true
    if (actingFor) {
      if (!isAddress(actingFor, { strict: false })) throw new PortalError('err.badAddress')
      patient = getAddress(actingFor)
      // The chain, not the gateway, says whether this account is the patient's guardian.
      const guardian = await state.chain!.guardianOf(patient)
      if (guardian.toLowerCase() !== state.address!.toLowerCase())
        throw new PortalError('err.notGuardian', { patient })
      banner.replaceChildren(t('guardian.acting', { patient }))
      banner.hidden = false
    }
    const base = await baseMessage(getAddress(grantee), kind, scopeId, patient)
    const head = await state.chain!.head()
    const message: ConsentMessage = { ...base, purposes: mask, expiresAt: head.timestamp + days * 86400 }
    const data = typedData(state.config!, 'grant', message)
    const sign = h(
      'button',
      {
        type: 'button',
        class: 'primary',
        id: 'grant-sign',
        onclick: async () => {
          try {
            say('ok', t('grant.sending'))
            await relay('grant', message)
            const answer = await state.chain!.consentOf(message.patient, message.grantee, kind, scopeId)
            if (answer.purposes === 0) throw new PortalError('err.chainSaysOtherwise')
            review.replaceChildren()
            say('ok', t('grant.done', { block: fmtNumber(answer.block), answer: answerText(answer.purposes, answer.expiresAt) }))
          } catch (exc) {
            sayError(exc)
          }
        },
      },
      t('grant.sign'),
    )
    review.replaceChildren(
      h('h2', {}, t('grant.reviewHeading')),
      h('p', {}, t('grant.reviewIntro')),
      h(
        'table',
        { class: 'typed', 'data-testid': 'typed-data' },
        h('caption', { class: 'visually-hidden' }, t('grant.reviewHeading')),
        h('tbody', {}, ...readableRows(data).map(([name, value, meaning]) =>
          h('tr', {}, h('th', { scope: 'row' }, name), h('td', { class: 'mono' }, value), h('td', {}, meaning)),
        )),
      ),
      sign,
    )
    sign.focus()
  } catch (exc) {
    sayError(exc)
  }
}

// ----------------------------------------------------------------------------- consents

async function consentsPage(): Promise<Child[]> {
  const consents = await loadConsents()
  if (!consents.granted.length) return [h('p', {}, t('consents.none'))]
  const block = await state.chain!.block(toHex(consents.block_number))
  const ctx = {
    chainId: state.config!.chain_id,
    registry: state.config!.registry,
    blockNumber: consents.block_number,
    blockTime: block.timestamp,
    language: lang(),
  }
  const rows = consents.granted.map((c, i) =>
    h(
      'tr',
      { 'data-grantee': c.grantee, 'data-scope': c.scope_kind, 'data-active': String(c.active) },
      h('td', { 'data-label': t('consents.grantee') }, addr(c.grantee)),
      h('td', { 'data-label': t('consents.scope') }, scopeText(c)),
      h('td', { 'data-label': t('consents.purposes') }, purposesText(c.purposes)),
      h('td', { 'data-label': t('consents.expires') }, fmtDate(c.expires_at)),
      h('td', { 'data-label': t('consents.status') }, c.active ? t('consents.active') : t('consents.inactive')),
      h(
        'td',
        { class: 'actions' },
        c.active
          ? h(
              'button',
              {
                type: 'button',
                class: 'danger',
                'data-testid': 'revoke',
                'aria-label': t('consents.revokeLabel', { grantee: c.grantee, scope: scopeText(c) }),
                onclick: () => void revoke(c),
              },
              t('consents.revoke'),
            )
          : null,
        h(
          'button',
          {
            type: 'button',
            'data-testid': 'receipt-json',
            onclick: () => download(`consent-receipt-${i + 1}.json`, kantaraReceipt(c, ctx)),
          },
          t('consents.receiptJson'),
        ),
        h(
          'button',
          {
            type: 'button',
            'data-testid': 'receipt-fhir',
            onclick: () => download(`consent-fhir-r5-${i + 1}.json`, consentR5(c, ctx)),
          },
          t('consents.receiptFhir'),
        ),
      ),
    ),
  )
  return [
    h(
      'table',
      { class: 'cards' },
      h('caption', { class: 'visually-hidden' }, t('consents.heading')),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['consents.grantee', 'consents.scope', 'consents.purposes', 'consents.expires', 'consents.status'].map((k) =>
            h('th', { scope: 'col' }, t(k)),
          ),
          h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, t('consents.revoke'))),
        ),
      ),
      h('tbody', {}, ...rows),
    ),
  ]
}

async function revoke(c: ConsentPublic): Promise<void> {
  try {
    say('ok', t('consents.revoking'))
    const kind = SCOPE_KIND[c.scope_kind]
    const message = await baseMessage(getAddress(c.grantee), kind, c.scope_id)
    await relay('revoke', message)
    // The chain's own answer, read here, not the gateway's receipt.
    const answer = await state.chain!.consentOf(getAddress(c.patient), getAddress(c.grantee), kind, c.scope_id)
    const text = t('consents.revoked', { block: fmtNumber(answer.block), answer: answerText(answer.purposes, answer.expiresAt) })
    await render()
    if (answer.purposes !== 0) throw new PortalError('err.chainSaysOtherwise')
    say('ok', text)
  } catch (exc) {
    sayError(exc)
  }
}

// ----------------------------------------------------------------------------- who read

interface Verified {
  verdict: 'verified' | 'pending' | 'failed'
}

async function whoReadPage(): Promise<Child[]> {
  const chain = state.chain!
  const me = state.address!.toLowerCase()
  const records = await loadRecords()
  const categories = new Map(records.map((r) => [r.record_id.toLowerCase(), r.category]))
  let page: AccessPage = { checkpoint: null, log_size: 0, entries: [] }
  let anchored: { treeSize: number; rootHash: Hex } | null = null
  for (let attempt = 0; attempt < 3; attempt++) {
    page = await fetchAllEntries()
    if (!page.checkpoint) break
    anchored = await chain.checkpointOf(page.checkpoint.gateway)
    if (anchored.treeSize === page.checkpoint.tree_size) break // else a newer anchor: again
  }
  const isGateway = page.checkpoint ? await chain.isGateway(page.checkpoint.gateway) : false
  const verdicts = page.entries.map((e): Verified => {
    if (!e.inclusion_proof || !anchored || !page.checkpoint) return { verdict: 'pending' }
    let ok = isGateway && anchored.treeSize === page.checkpoint.tree_size
    try {
      const parsed = JSON.parse(e.leaf) as Record<string, unknown>
      ok = ok && String(parsed.patient).toLowerCase() === me
    } catch {
      ok = false
    }
    const computed = toHex(leafHash(new TextEncoder().encode(e.leaf)))
    ok = ok && verifyInclusionHex(computed, e.index, anchored.treeSize, e.inclusion_proof, anchored.rootHash)
    return { verdict: ok ? 'verified' : 'failed' }
  })
  const openings = await chain.breakGlass(state.address!)
  const head = await chain.head()
  const out: Child[] = [breakGlassSection(openings, head.timestamp)]
  out.push(
    page.checkpoint && anchored
      ? h(
          'p',
          { class: 'fine', 'data-testid': 'checkpoint' },
          t('who.checkpoint', {
            gateway: short(page.checkpoint.gateway),
            size: fmtNumber(anchored.treeSize),
            root: short(anchored.rootHash),
          }),
        )
      : h('p', { class: 'fine' }, t('who.noCheckpoint')),
  )
  if (!page.entries.length) {
    out.push(h('p', {}, t('who.none')))
    return out
  }
  const items = page.entries
    .map((e, i) => ({ e, v: verdicts[i] }))
    .reverse()
    .map(({ e, v }) => {
      const leaf = JSON.parse(e.leaf) as Record<string, unknown>
      const allowed = leaf.decision === 'allowed'
      const record = String(leaf.record)
      const basisKey = `basis.${String(leaf.reason)}`
      const basis = t(basisKey) === basisKey ? String(leaf.reason) : t(basisKey)
      const badge = h(
        'span',
        { class: `badge ${v.verdict}`, 'data-testid': `proof-${v.verdict}` },
        v.verdict === 'verified' ? `✓ ${t('who.verified')}` : v.verdict === 'pending' ? t('who.pending') : `✗ ${t('who.failed')}`,
      )
      const time = Date.parse(String(leaf.time)) / 1000
      return h(
        'li',
        {
          class: `entry ${allowed ? 'allowed' : 'denied'}`,
          'data-testid': 'access-entry',
          'data-decision': String(leaf.decision),
          'data-requester': String(leaf.requester),
        },
        h('p', { class: 'when' }, fmtDate(time)),
        h(
          'dl',
          {},
          h('dt', {}, t('who.requester')), h('dd', {}, addr(String(leaf.requester))),
          h('dt', {}, t('who.record')), h('dd', {}, `${categoryName(categories.get(record) ?? '?')} ${short(record)}`),
          h('dt', {}, t('who.purpose')), h('dd', {}, purposeName(Number(leaf.purpose))),
          h('dt', {}, t('who.decision')), h('dd', { class: 'decision' }, allowed ? t('who.allowed') : t('who.denied')),
          h('dt', {}, t('who.basis')), h('dd', {}, basis),
          h('dt', {}, t('who.block')), h('dd', {}, leaf.block === null ? '—' : fmtNumber(Number(leaf.block))),
          h('dt', {}, t('who.proof')), h('dd', {}, badge),
        ),
      )
    })
  out.push(h('ol', { class: 'timeline' }, ...items))
  return out
}

async function fetchAllEntries(): Promise<AccessPage> {
  let after = -1
  let result: AccessPage | null = null
  for (;;) {
    const page = await call<AccessPage>('GET', `/v1/access-log/entries?after=${after}&limit=1000`)
    if (!result) result = page
    else result.entries.push(...page.entries)
    if (page.entries.length < 1000) return result
    after = page.entries[page.entries.length - 1].index
  }
}

function breakGlassSection(openings: BreakGlassOpening[], now: number): HTMLElement {
  const section = h('section', { class: 'break-glass', 'aria-labelledby': 'bg-heading' }, h('h2', { id: 'bg-heading' }, t('bg.heading')))
  if (!openings.length) {
    section.append(h('p', {}, t('bg.none')))
    return section
  }
  const list = h('ul', {})
  for (const o of [...openings].reverse()) {
    const isOpen = o.currentUntil > now && o.until === o.currentUntil
    list.append(
      h(
        'li',
        { class: isOpen ? 'open' : 'ended', 'data-testid': 'break-glass', 'data-open': String(isOpen) },
        h('p', {}, h('strong', {}, isOpen ? t('bg.open') : t('bg.closed')), ' ', t('bg.institution'), ': ', addr(o.institution)),
        h('p', {}, `${t('bg.window')}: ${fmtDate(o.openedAt)} – ${fmtDate(o.until)}`),
        h('p', { class: 'fine' }, `${t('bg.reason')}: `, h('span', { class: 'mono' }, short(o.reasonHash))),
        isOpen
          ? h(
              'button',
              {
                type: 'button',
                class: 'danger',
                'data-testid': 'close-break-glass',
                'aria-label': t('bg.closeLabel', { institution: o.institution }),
                onclick: () => void closeBreakGlass(o),
              },
              t('bg.close'),
            )
          : null,
      ),
    )
  }
  section.append(list)
  return section
}

async function closeBreakGlass(o: BreakGlassOpening): Promise<void> {
  try {
    const chain = state.chain!
    await ensureChain(state.config!)
    const hash = await sendTransaction(state.address!, state.config!.registry, chain.closeBreakGlassData(state.address!, o.institution))
    const receipt = await chain.waitForReceipt(hash)
    const [until, reopens, head] = await Promise.all([
      chain.breakGlassUntil(state.address!, o.institution),
      chain.breakGlassReopensAt(state.address!, o.institution),
      chain.head(),
    ])
    await render()
    if (!receipt.ok || until > head.timestamp) throw new PortalError('err.chainSaysOtherwise')
    say('ok', t('bg.closedDone', { block: fmtNumber(receipt.block), institution: o.institution, reopens: fmtDate(reopens) }))
  } catch (exc) {
    sayError(exc)
  }
}

// ----------------------------------------------------------------------------- centre upload

async function uploadPage(): Promise<Child[]> {
  const bar = h('progress', { id: 'upload-progress', max: '1', value: '0', 'aria-label': t('upload.progress') }) as HTMLProgressElement
  const form = h(
    'form',
    { novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'upload-patient' }, t('upload.patient')),
      h('input', { id: 'upload-patient', type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: '0x…' })),
    h('div', { class: 'field' }, h('label', { for: 'upload-category' }, t('grant.category')),
      h('select', { id: 'upload-category' }, ...CATEGORIES.map((c) => h('option', { value: c, selected: c === 'laboratory' }, categoryName(c))))),
    h('div', { class: 'field' }, h('label', { for: 'upload-file' }, t('upload.file')), h('input', { id: 'upload-file', type: 'file' })),
    h('button', { type: 'submit', class: 'primary', id: 'upload-send' }, t('upload.send')),
    bar,
  ) as HTMLFormElement
  form.addEventListener('submit', (e) => {
    e.preventDefault()
    void sendUpload(form, bar)
  })
  return [h('p', {}, t('upload.intro')), form]
}

async function sendUpload(form: HTMLFormElement, bar: HTMLProgressElement): Promise<void> {
  if (state.busy) return
  const patient = (form.querySelector('#upload-patient') as HTMLInputElement).value.trim()
  const category = (form.querySelector('#upload-category') as HTMLSelectElement).value
  const file = (form.querySelector('#upload-file') as HTMLInputElement).files?.[0]
  if (!isAddress(patient, { strict: false })) return sayError(new PortalError('err.badPatient'))
  if (!file) return sayError(new PortalError('err.noFile'))
  state.busy = true
  try {
    say('ok', t('upload.sealing'))
    await ensureChain(state.config!)
    const { uploadSealed } = await import('./custody/upload')
    const done = await uploadSealed({
      config: state.config!,
      chain: state.chain!,
      centre: state.address!,
      patient: getAddress(patient),
      category: padHex(toHex(category), { dir: 'right', size: 32 }),
      document: new Uint8Array(await file.arrayBuffer()),
      filename: file.name,
      sign: (data) => signTypedData(state.address!, data),
      progress: (fraction) => {
        bar.value = fraction
        if (fraction < 1) say('ok', t('upload.sending', { percent: fmtNumber(Math.round(fraction * 100)) }))
      },
    })
    say('ok', t('upload.done', { record: done.recordId }))
    document.getElementById('status')?.setAttribute('data-record', done.recordId)
  } catch (exc) {
    sayError(exc)
  } finally {
    state.busy = false
  }
}

// ----------------------------------------------------------------------------- auditor

async function auditorPage(): Promise<Child[]> {
  const [gateways, page] = await Promise.all([
    state.chain!.federation(),
    call<AccessPage>('GET', '/v1/access-log/entries?limit=1'),
  ])
  const here = page.checkpoint?.gateway.toLowerCase()
  const rows = gateways.map((g) =>
    h(
      'tr',
      { 'data-gateway': g.gateway },
      h('td', { 'data-label': t('audit.gateway') }, addr(g.gateway), g.gateway.toLowerCase() === here ? ` (${t('audit.this')})` : ''),
      h('td', { 'data-label': t('audit.role') }, g.member ? t('audit.member') : t('audit.former')),
      h('td', { 'data-label': t('audit.anchored'), 'data-testid': 'anchored-size' }, fmtNumber(g.treeSize)),
      h('td', { 'data-label': t('audit.root') }, h('span', { class: 'mono' }, g.treeSize ? short(g.rootHash) : '—')),
      h(
        'td',
        { 'data-label': t('audit.logSize') },
        g.gateway.toLowerCase() === here ? fmtNumber(page.log_size) : '—',
      ),
    ),
  )
  const exportButton = h(
    'button',
    {
      type: 'button',
      id: 'download-export',
      onclick: async () => {
        try {
          download('access-log-export.json', await call<unknown>('GET', '/v1/access-log/export'))
        } catch (exc) {
          sayError(exc)
        }
      },
    },
    t('audit.export'),
  )
  return [
    h('p', {}, t('audit.intro')),
    h(
      'table',
      { class: 'cards' },
      h('caption', { class: 'visually-hidden' }, t('audit.heading')),
      h(
        'thead',
        {},
        h('tr', {}, ...['audit.gateway', 'audit.role', 'audit.anchored', 'audit.root', 'audit.logSize'].map((k) => h('th', { scope: 'col' }, t(k)))),
      ),
      h('tbody', {}, ...rows),
    ),
    exportButton,
    h('p', { class: 'fine' }, t('audit.exportHelp')),
  ]
}

const PAGE_RENDERERS: Record<Page, () => Promise<Child[]>> = {
  records: recordsPage,
  grant: grantPage,
  consents: consentsPage,
  'who-read': whoReadPage,
  upload: uploadPage,
  auditor: auditorPage,
}

// ----------------------------------------------------------------------------- start

async function start(): Promise<void> {
  const saved = localStorage.getItem('portal.lang')
  setLang(saved === 'zh-CN' || saved === 'en' ? saved : navigator.language.startsWith('zh') ? 'zh-CN' : 'en')
  whenSessionEnds(() => {
    state.address = null
    void render().then(() => say('error', t('err.session')))
  })
  window.addEventListener('hashchange', () => {
    if (!hasSession()) return
    state.message = null
    void render().then(() => (document.querySelector('h1') as HTMLElement | null)?.focus())
  })
  try {
    const response = await fetch('/portal/config.json', { cache: 'no-store' })
    state.config = (await response.json()) as Config
  } catch {
    document.getElementById('app')!.replaceChildren(h('p', { role: 'alert' }, t('err.gatewayDown')))
    return
  }
  try {
    state.chain = new Chain(state.config)
  } catch (exc) {
    state.chain = null
    await render()
    sayError(exc)
    return
  }
  await render()
}

void start()
