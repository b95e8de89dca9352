// English and Simplified Chinese. Numbers and dates go through Intl in the chosen locale.
export type Lang = 'en' | 'zh-CN'

type Dict = Record<string, string>

const en: Dict = {
  title: 'Consent Ledger',
  tagline: 'Your checkup results, and who may read them',
  language: 'Language',
  'nav.records': 'My records',
  'nav.grant': 'Grant access',
  'nav.consents': 'My consents',
  'nav.whoRead': 'Who read my records',
  'nav.auditor': 'Auditor',
  'nav.signOut': 'Sign out',
  'audit.heading': 'The federation\'s gateways',
  'audit.intro':
    'Every account that held the gateway role on the chain, with the last access-log checkpoint it anchored there (read from the chain by this browser).',
  'audit.gateway': 'Gateway',
  'audit.this': 'this gateway',
  'audit.role': 'Role',
  'audit.member': 'gateway now',
  'audit.former': 'role removed',
  'audit.anchored': 'Anchored entries',
  'audit.root': 'Root',
  'audit.logSize': 'Log size (its own answer)',
  'audit.export': 'Download this gateway\'s access log',
  'audit.exportHelp':
    'For auditors this gateway lists; check it with `consent audit run --access-log FILE`.',
  'err.forbidden':
    'This account may not do that here (for an export: only the auditors this gateway lists). Sign in with the right account.',
  'signin.heading': 'Sign in',
  'signin.intro':
    'Sign in with your wallet. You sign a short message; nothing is sent to the chain and it costs nothing.',
  'signin.button': 'Sign in with wallet',
  'signin.signedInAs': 'Signed in as {address}',
  'signin.busy': 'Waiting for your wallet…',
  'signin.trust':
    'This page comes from the gateway you opened it on, which you trust for this code. It reads the chain itself at {rpc}.',
  'local.heading': 'Or use a key kept in this browser',
  'local.intro':
    'The key is made here and stored in this browser only, encrypted with your passphrase. Download its keyfile and keep it safe: if this browser loses it, only the keyfile brings it back.',
  'local.stored': 'A key for {address} is stored in this browser.',
  'local.passphrase': 'Passphrase',
  'local.confirm': 'Passphrase again',
  'local.unlock': 'Unlock and sign in',
  'local.create': 'Create a key and sign in',
  'local.export': 'Download keyfile',
  'err.passphrase': 'That passphrase does not unlock the key in this browser. Check it and try again.',
  'err.passphraseShort': 'Choose a passphrase of at least {min} characters.',
  'err.passphraseMismatch': 'The two passphrases differ. Type the same passphrase twice.',
  'err.noLocalKey': 'No key is stored in this browser. Create one, or sign in with your wallet.',
  'err.localNoTx':
    'The built-in key cannot send transactions (it holds no ETH for gas). Sign in with a wallet to do this.',
  'records.heading': 'My records',
  'records.none': 'No records yet.',
  'records.category': 'Category',
  'records.centre': 'Centre',
  'records.issued': 'Issued',
  'records.readers': 'Who can read it now',
  'records.onlyYou': 'Only you',
  'records.record': 'Record',
  'grant.heading': 'Grant access',
  'guardian.actingFor': 'Acting for a patient (guardians only; leave empty for yourself)',
  'guardian.help': 'The 0x address of the patient the chain lists you as guardian for.',
  'guardian.acting': 'You are acting for patient {patient}: the chain lists you as their guardian. This grant is theirs.',
  'err.notGuardian':
    'The chain does not list you as the guardian of {patient}. Check the address, or ask the patient to name you (consent guardian set).',
  'grant.grantee': 'Grantee address',
  'grant.granteeHelp': 'The 0x address of the doctor, insurer or researcher.',
  'grant.scope': 'What they may read',
  'grant.scope.record': 'One record',
  'grant.scope.category': 'A category of records',
  'grant.scope.all': 'All my records',
  'grant.record': 'Record',
  'grant.category': 'Category',
  'grant.purpose': 'Purpose',
  'grant.expiry': 'Expires after (days)',
  'grant.review': 'Review',
  'grant.reviewHeading': 'What you are about to sign',
  'grant.reviewIntro':
    'Your wallet will show these fields (EIP-712). The right-hand column says what each one means.',
  'grant.sign': 'Sign and grant',
  'grant.done': 'Granted. The chain (block {block}) now shows: {answer}.',
  'grant.sending': 'Sending your signed grant to the gateway…',
  'consents.heading': 'My consents',
  'consents.none': 'You have not granted any consent.',
  'consents.grantee': 'Grantee',
  'consents.scope': 'Scope',
  'consents.purposes': 'Purposes',
  'consents.expires': 'Expires',
  'consents.status': 'Status',
  'consents.active': 'in force',
  'consents.inactive': 'ended',
  'consents.revoke': 'Revoke',
  'consents.revokeLabel': 'Revoke access of {grantee} to {scope}',
  'consents.receiptJson': 'Receipt (JSON)',
  'consents.receiptFhir': 'FHIR R5 Consent',
  'consents.revoking': 'Revoking…',
  'consents.revoked':
    'Revoked. The chain itself (block {block}) now answers consentOf: {answer}.',
  'answer.none': 'no consent (purposes 0, expiry 0)',
  'answer.some': 'purposes {purposes}, until {expires}',
  'who.heading': 'Who read my records',
  'who.none': 'Nobody has asked for your records yet.',
  'who.time': 'Time',
  'who.requester': 'Requester',
  'who.record': 'Record',
  'who.purpose': 'Purpose',
  'who.decision': 'Decision',
  'who.basis': 'Basis',
  'who.block': 'Block',
  'who.proof': 'Proof',
  'who.allowed': 'allowed',
  'who.denied': 'denied',
  'who.verified': 'verified',
  'who.pending': 'not yet anchored',
  'who.failed': 'NOT verified',
  'who.checkpoint':
    'Checked in this browser against the checkpoint of gateway {gateway} on the chain: {size} entries, root {root}.',
  'who.noCheckpoint': 'No checkpoint is anchored on the chain yet; entries cannot be verified.',
  'bg.heading': 'Emergency (break-glass) openings',
  'bg.none': 'No emergency opening of your records.',
  'bg.institution': 'Institution',
  'bg.window': 'Window',
  'bg.reason': 'Reason hash',
  'bg.open': 'OPEN',
  'bg.closed': 'ended',
  'bg.close': 'Close this opening',
  'bg.closeLabel': 'Close this opening by {institution}',
  'bg.closedDone':
    'Closed. The chain (block {block}) now says the opening by {institution} ended; it cannot reopen before {reopens}.',
  'basis.owner': 'you',
  'basis.consent': 'consent',
  'basis.guardian': 'guardian',
  'basis.emergency': 'emergency',
  'basis.no_consent': 'no consent',
  'purpose.0': 'treatment',
  'purpose.1': 'research',
  'purpose.2': 'insurance',
  'purpose.3': 'public health',
  'purpose.4': 'emergency',
  'category.checkup': 'checkup',
  'category.laboratory': 'laboratory',
  'category.imaging': 'imaging',
  'category.prescription': 'prescription',
  'err.noWallet':
    'No wallet was found in this browser. Install a wallet extension (for example MetaMask) and reload this page.',
  'err.rejected': 'You declined the request in your wallet. Nothing was changed; try again when ready.',
  'err.wrongNetwork':
    'Your wallet is on network {actual}, but this portal works on network {expected}. Switch your wallet to network {expected} and try again.',
  'err.domain':
    'This page is open at {actual}, but the gateway signs in only for {expected}. Open the portal at {uri}/portal/ instead.',
  'err.session': 'Your session has ended. Sign in again to continue.',
  'err.gatewayDown':
    'The gateway cannot be reached. Check your connection and try again in a minute.',
  'err.chainDown':
    'The blockchain node cannot be reached, so nothing can be checked. Try again in a few minutes; if it lasts, tell the gateway operator.',
  'err.noChainUrl':
    'This gateway does not say where browsers can read the chain. Ask its operator to set CONSENT_PORTAL_CHAIN_URL.',
  'err.quota':
    'You reached this gateway\'s limit of {limit} relayed changes per hour. Try again in {minutes} minutes.',
  'err.rate': 'The gateway is busy relaying for others. Try again in a minute.',
  'err.gasCap':
    'The gateway will not pay for this change (it needs more gas than its limit). Send it from your own wallet instead.',
  'err.noConsent': 'You hold no consent for this record. Ask the patient to grant it.',
  'err.notFound': 'That consent no longer exists on the chain; reload the page to see the current list.',
  'err.expiryPast': 'The expiry is in the past. Choose an expiry in the future.',
  'err.nonce': 'Your signature used an old nonce, perhaps from another tab. Try again.',
  'err.badAddress': 'That is not a valid 0x address. Check the grantee address and try again.',
  'err.badInput': 'Some field is not valid. Check the form and try again.',
  'err.purpose': 'Choose at least one purpose.',
  'err.siwe': 'The gateway refused the sign-in ({code}). Reload the page and sign in again.',
  'err.chainSaysOtherwise':
    'The gateway reported success, but the chain does not show the change yet. Reload in a minute; if it stays, revoke from your own wallet.',
  'err.other':
    'The gateway refused the request ({code}). Try again; if it keeps failing, tell the gateway operator.',
}

const zh: Dict = {
  title: '知情同意账本',
  tagline: '您的体检结果，以及谁可以查看',
  language: '语言',
  'nav.records': '我的记录',
  'nav.grant': '授权访问',
  'nav.consents': '我的授权',
  'nav.whoRead': '谁查看了我的记录',
  'nav.auditor': '审计',
  'nav.signOut': '退出',
  'audit.heading': '联盟的网关',
  'audit.intro': '链上所有曾持有网关角色的账户，以及它在链上锚定的最后一个访问日志检查点（由本浏览器从链上读取）。',
  'audit.gateway': '网关',
  'audit.this': '本网关',
  'audit.role': '角色',
  'audit.member': '现为网关',
  'audit.former': '角色已撤销',
  'audit.anchored': '已锚定条目',
  'audit.root': '根',
  'audit.logSize': '日志大小（其自述）',
  'audit.export': '下载本网关的访问日志',
  'audit.exportHelp': '供本网关列出的审计员使用；用 `consent audit run --access-log FILE` 核查。',
  'err.forbidden': '此账户不能在这里进行该操作（导出日志：仅限本网关列出的审计员）。请用正确的账户登录。',
  'signin.heading': '登录',
  'signin.intro': '用您的钱包登录。您只需签署一条短消息，不会上链，也不产生费用。',
  'signin.button': '用钱包登录',
  'signin.signedInAs': '已登录：{address}',
  'signin.busy': '正在等待钱包…',
  'signin.trust': '本页面由您打开它的网关提供，您信任其代码。页面直接从 {rpc} 读取区块链。',
  'local.heading': '或使用保存在本浏览器中的密钥',
  'local.intro': '密钥在此生成，只保存在本浏览器中，并用您的口令加密。请下载其密钥文件妥善保管：浏览器丢失密钥时，只有密钥文件能找回。',
  'local.stored': '本浏览器中保存着 {address} 的密钥。',
  'local.passphrase': '口令',
  'local.confirm': '再次输入口令',
  'local.unlock': '解锁并登录',
  'local.create': '生成密钥并登录',
  'local.export': '下载密钥文件',
  'err.passphrase': '该口令无法解锁本浏览器中的密钥。请检查后重试。',
  'err.passphraseShort': '请选择至少 {min} 个字符的口令。',
  'err.passphraseMismatch': '两次输入的口令不同。请输入相同的口令。',
  'err.noLocalKey': '本浏览器中没有保存密钥。请生成一个，或用钱包登录。',
  'err.localNoTx': '内置密钥无法发送交易（它没有支付 gas 的 ETH）。请用钱包登录后再操作。',
  'records.heading': '我的记录',
  'records.none': '暂无记录。',
  'records.category': '类别',
  'records.centre': '体检中心',
  'records.issued': '出具日期',
  'records.readers': '当前可查看者',
  'records.onlyYou': '仅您本人',
  'records.record': '记录',
  'grant.heading': '授权访问',
  'guardian.actingFor': '代患者操作（仅限监护人；为自己授权请留空）',
  'guardian.help': '链上登记您为其监护人的患者的 0x 地址。',
  'guardian.acting': '您正在代患者 {patient} 操作：链上登记您为其监护人。此授权属于该患者。',
  'err.notGuardian': '链上没有登记您为 {patient} 的监护人。请检查地址，或请患者指定您（consent guardian set）。',
  'grant.grantee': '被授权人地址',
  'grant.granteeHelp': '医生、保险公司或研究人员的 0x 地址。',
  'grant.scope': '可查看范围',
  'grant.scope.record': '一条记录',
  'grant.scope.category': '一类记录',
  'grant.scope.all': '我的全部记录',
  'grant.record': '记录',
  'grant.category': '类别',
  'grant.purpose': '用途',
  'grant.expiry': '有效天数',
  'grant.review': '核对',
  'grant.reviewHeading': '您将要签署的内容',
  'grant.reviewIntro': '您的钱包会显示这些字段（EIP-712），右栏说明每项的含义。',
  'grant.sign': '签名并授权',
  'grant.done': '已授权。区块链（区块 {block}）现在显示：{answer}。',
  'grant.sending': '正在把您签名的授权发送给网关…',
  'consents.heading': '我的授权',
  'consents.none': '您尚未授权任何人。',
  'consents.grantee': '被授权人',
  'consents.scope': '范围',
  'consents.purposes': '用途',
  'consents.expires': '到期',
  'consents.status': '状态',
  'consents.active': '有效',
  'consents.inactive': '已结束',
  'consents.revoke': '撤销',
  'consents.revokeLabel': '撤销 {grantee} 对 {scope} 的访问',
  'consents.receiptJson': '同意回执（JSON）',
  'consents.receiptFhir': 'FHIR R5 Consent',
  'consents.revoking': '正在撤销…',
  'consents.revoked': '已撤销。区块链本身（区块 {block}）对 consentOf 的回答：{answer}。',
  'answer.none': '无授权（用途 0，到期 0）',
  'answer.some': '用途 {purposes}，有效至 {expires}',
  'who.heading': '谁查看了我的记录',
  'who.none': '还没有人请求查看您的记录。',
  'who.time': '时间',
  'who.requester': '请求者',
  'who.record': '记录',
  'who.purpose': '用途',
  'who.decision': '结果',
  'who.basis': '依据',
  'who.block': '区块',
  'who.proof': '证明',
  'who.allowed': '允许',
  'who.denied': '拒绝',
  'who.verified': '已验证',
  'who.pending': '尚未上链锚定',
  'who.failed': '验证失败',
  'who.checkpoint': '已在本浏览器中对照网关 {gateway} 在链上的检查点验证：{size} 条，根 {root}。',
  'who.noCheckpoint': '链上尚无检查点，暂时无法验证。',
  'bg.heading': '紧急（破窗）访问',
  'bg.none': '您的记录没有被紧急访问。',
  'bg.institution': '机构',
  'bg.window': '时间窗口',
  'bg.reason': '理由哈希',
  'bg.open': '进行中',
  'bg.closed': '已结束',
  'bg.close': '关闭此次访问',
  'bg.closeLabel': '关闭此次访问（{institution}）',
  'bg.closedDone': '已关闭。区块链（区块 {block}）显示 {institution} 的访问已结束；{reopens} 之前不能再次开启。',
  'basis.owner': '本人',
  'basis.consent': '授权',
  'basis.guardian': '监护人',
  'basis.emergency': '紧急',
  'basis.no_consent': '无授权',
  'purpose.0': '诊疗',
  'purpose.1': '科研',
  'purpose.2': '保险',
  'purpose.3': '公共卫生',
  'purpose.4': '急救',
  'category.checkup': '体检',
  'category.laboratory': '化验',
  'category.imaging': '影像',
  'category.prescription': '处方',
  'err.noWallet': '此浏览器中没有找到钱包。请安装钱包扩展（例如 MetaMask）后刷新页面。',
  'err.rejected': '您在钱包中拒绝了请求，没有任何更改；准备好后请重试。',
  'err.wrongNetwork': '您的钱包在网络 {actual} 上，而本门户使用网络 {expected}。请把钱包切换到网络 {expected} 后重试。',
  'err.domain': '本页面打开于 {actual}，但网关只接受 {expected} 的登录。请改为打开 {uri}/portal/。',
  'err.session': '您的会话已结束，请重新登录。',
  'err.gatewayDown': '无法连接网关。请检查网络连接，一分钟后重试。',
  'err.chainDown': '无法连接区块链节点，因此无法核对。请几分钟后重试；如果持续，请告知网关运营方。',
  'err.noChainUrl': '该网关没有提供浏览器读取区块链的地址。请让运营方设置 CONSENT_PORTAL_CHAIN_URL。',
  'err.quota': '您已达到该网关每小时 {limit} 次代付更改的上限。请在 {minutes} 分钟后重试。',
  'err.rate': '网关正忙于为他人代付。请一分钟后重试。',
  'err.gasCap': '网关不会为此更改付费（所需 gas 超过其上限）。请改用您自己的钱包发送。',
  'err.noConsent': '您没有此记录的授权。请请患者授权。',
  'err.notFound': '该授权在链上已不存在；请刷新页面查看当前列表。',
  'err.expiryPast': '到期时间已过。请选择未来的时间。',
  'err.nonce': '您的签名使用了旧的序号（可能来自另一个标签页）。请重试。',
  'err.badAddress': '这不是有效的 0x 地址。请检查被授权人地址后重试。',
  'err.badInput': '有字段无效。请检查表单后重试。',
  'err.purpose': '请至少选择一个用途。',
  'err.siwe': '网关拒绝了登录（{code}）。请刷新页面后重新登录。',
  'err.chainSaysOtherwise': '网关报告成功，但区块链尚未显示该更改。请一分钟后刷新；若仍如此，请用您自己的钱包撤销。',
  'err.other': '网关拒绝了请求（{code}）。请重试；如果一直失败，请告知网关运营方。',
}

const dicts: Record<Lang, Dict> = { en, 'zh-CN': zh }
let current: Lang = 'en'

export function setLang(lang: Lang): void {
  current = lang
  document.documentElement.lang = lang
}

export function lang(): Lang {
  return current
}

export function t(key: string, params: Record<string, string | number> = {}): string {
  const text = dicts[current][key] ?? en[key] ?? key
  return text.replace(/\{(\w+)\}/g, (_, name: string) =>
    name in params ? String(params[name]) : `{${name}}`,
  )
}

export function fmtNumber(n: number | bigint): string {
  return new Intl.NumberFormat(current).format(n)
}

export function fmtDate(unixSeconds: number): string {
  const text = new Intl.DateTimeFormat(current, {
    dateStyle: 'medium',
    timeStyle: 'short',
    timeZone: 'UTC',
  }).format(new Date(unixSeconds * 1000))
  return `${text} UTC`
}

export function fmtDay(unixSeconds: number): string {
  return new Intl.DateTimeFormat(current, { dateStyle: 'medium', timeZone: 'UTC' }).format(
    new Date(unixSeconds * 1000),
  )
}

export function purposeName(id: number): string {
  return t(`purpose.${id}`) === `purpose.${id}` ? `#${id}` : t(`purpose.${id}`)
}

export function categoryName(name: string): string {
  const key = `category.${name}`
  const text = t(key)
  return text === key ? name : text
}
