// RFC 9162 (Certificate Transparency v2) inclusion proofs, checked in the browser against the
// checkpoint read from the chain. SHA-256 is @noble/hashes' (through viem); the algorithm is
// RFC 9162 section 2.1.3.2, the same as ledger/protocol/merkle.py (shared test vectors).
import { sha256 } from 'viem'
import { concatBytes, hexToBytes, bytesToHex, type Hex } from 'viem'

const HASH_SIZE = 32

export function leafHash(entry: Uint8Array): Uint8Array {
  return sha256(concatBytes([new Uint8Array([0]), entry]), 'bytes')
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return sha256(concatBytes([new Uint8Array([1]), left, right]), 'bytes')
}

/** The root an inclusion proof leads to, or null when it is structurally invalid. */
export function rootFromInclusionProof(
  leaf: Uint8Array,
  index: number,
  treeSize: number,
  proof: Uint8Array[],
): Uint8Array | null {
  if (!(Number.isSafeInteger(index) && Number.isSafeInteger(treeSize))) return null
  if (index < 0 || index >= treeSize) return null
  if (leaf.length !== HASH_SIZE || proof.some((p) => p.length !== HASH_SIZE)) return null
  // Tree sizes fit in 53 bits; BigInt keeps the shifts exact beyond 2^31.
  let fn = BigInt(index)
  let sn = BigInt(treeSize - 1)
  let r = leaf
  for (const p of proof) {
    if (sn === 0n) return null
    if ((fn & 1n) === 1n || fn === sn) {
      r = nodeHash(p, r)
      if ((fn & 1n) === 0n) {
        while (fn !== 0n && (fn & 1n) === 0n) {
          fn >>= 1n
          sn >>= 1n
        }
      }
    } else {
      r = nodeHash(r, p)
    }
    fn >>= 1n
    sn >>= 1n
  }
  return sn === 0n ? r : null
}

export function verifyInclusion(
  leaf: Uint8Array,
  index: number,
  treeSize: number,
  proof: Uint8Array[],
  root: Uint8Array,
): boolean {
  const computed = rootFromInclusionProof(leaf, index, treeSize, proof)
  return computed !== null && bytesToHex(computed) === bytesToHex(root)
}

/** verifyInclusion over 0x-hex strings (what the gateway and the chain answer). */
export function verifyInclusionHex(
  leafHex: Hex,
  index: number,
  treeSize: number,
  proofHex: Hex[],
  rootHex: Hex,
): boolean {
  try {
    return verifyInclusion(
      hexToBytes(leafHex),
      index,
      treeSize,
      proofHex.map((p) => hexToBytes(p)),
      hexToBytes(rootHex),
    )
  } catch {
    return false
  }
}
