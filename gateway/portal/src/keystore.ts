// IndexedDB holding the built-in key, encrypted (see localkey.ts); small, so the sign-in page
// can say whether a key is stored without loading the key code.
import type { Hex } from 'viem'

const DB = 'consent-portal'
const STORE = 'keys'
export const ID = 'default'

export interface StoredKey {
  address: Hex
  salt: Uint8Array
  iv: Uint8Array
  ciphertext: Uint8Array
  iterations: number
}

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB, 1)
    request.onupgradeneeded = () => request.result.createObjectStore(STORE)
    request.onsuccess = () => resolve(request.result)
    request.onerror = () => reject(request.error)
  })
}

export async function tx<T>(mode: IDBTransactionMode, work: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await open()
  try {
    return await new Promise<T>((resolve, reject) => {
      const request = work(db.transaction(STORE, mode).objectStore(STORE))
      request.onsuccess = () => resolve(request.result)
      request.onerror = () => reject(request.error)
    })
  } finally {
    db.close()
  }
}

/** The address of the key stored in this browser, or null (without creating the database). */
export async function storedAddress(): Promise<Hex | null> {
  const dbs = await indexedDB.databases()
  if (!dbs.some((d) => d.name === DB)) return null
  const stored = await tx<StoredKey | undefined>('readonly', (s) => s.get(ID))
  return stored?.address ?? null
}

