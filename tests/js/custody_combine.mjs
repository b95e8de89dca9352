// The JavaScript side of threshold custody, as the browser portal will do it: npm `slip39`
// (SLIP-0039) and `eciesjs` (the twin of eciespy), taken from hardhat_local/node_modules.
//
//   node custody_combine.mjs vectors FILE   check tests/vectors/custody.json; prints {"ok":..}
//   node custody_combine.mjs official FILE  run the SLIP-39 specification's vectors.json
//   node custody_combine.mjs combine        stdin {requester_private_key, threshold,
//                                           commitments: [hex], released: {index: base64}}
//                                           -> {data_key, bad} or {error, bad}
//   node custody_combine.mjs split          stdin {data_key, threshold, public_keys: [hex]}
//                                           -> {sealed: [base64], commitments: [hex]}
//
// Any failure exits non-zero with the reason on stderr.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(new URL("../../hardhat_local/package.json", import.meta.url));
const slip39 = require("slip39");
const { encrypt, decrypt } = require("eciesjs");

const PASSPHRASE = "";
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const unhex = (text) => Buffer.from(text.replace(/^0x/, ""), "hex");
const sha256 = (bytes) => createHash("sha256").update(bytes).digest();

function fail(message) {
  throw new Error(message);
}

function combineMnemonics(mnemonics) {
  return Buffer.from(slip39.recoverSecret(mnemonics, PASSPHRASE));
}

// Open released shares, keep those matching their commitment, combine `threshold` of them.
function recover({ requester_private_key, threshold, commitments, released }) {
  const good = [];
  const bad = [];
  for (const index of Object.keys(released).map(Number).sort((a, b) => a - b)) {
    let share;
    try {
      share = decrypt(unhex(requester_private_key), Buffer.from(released[index], "base64"));
    } catch {
      bad.push(index);
      continue;
    }
    if (sha256(share).equals(unhex(commitments[index]))) good.push(share.toString("ascii"));
    else bad.push(index);
  }
  if (good.length < threshold) return { error: "not_enough_shares", have: good.length, bad };
  return { data_key: hex(combineMnemonics(good.slice(0, threshold))), bad };
}

function split({ data_key, threshold, public_keys }) {
  const groups = public_keys.map(() => [1, 1]);
  const slip = slip39.fromArray([...unhex(data_key)], {
    passphrase: PASSPHRASE,
    threshold,
    groups,
    iterationExponent: 0,
    extendableBackupFlag: 0,
  });
  const shares = slip.fromPath("r").mnemonics.map((m) => Buffer.from(m, "ascii"));
  return {
    sealed: shares.map((s, i) => Buffer.from(encrypt(unhex(public_keys[i]), s)).toString("base64")),
    commitments: shares.map((s) => "0x" + hex(sha256(s))),
  };
}

function* subsets(items, k, start = 0, chosen = []) {
  if (chosen.length === k) yield [...chosen];
  else
    for (let i = start; i < items.length; i++) yield* subsets(items, k, i + 1, [...chosen, items[i]]);
}

function checkVectors(file) {
  const doc = JSON.parse(readFileSync(file, "utf8"));
  let checked = 0;
  for (const c of doc.cases) {
    const n = c.members.length;
    const shares = c.shares.map((m) => Buffer.from(m, "ascii"));
    shares.forEach((s, i) => {
      if ("0x" + hex(sha256(s)) !== c.commitments[i]) fail(`${c.name}: commitment ${i}`);
    });
    const indices = [...Array(n).keys()];
    for (const subset of subsets(indices, c.threshold)) {
      const key = hex(combineMnemonics(subset.map((i) => c.shares[i])));
      if ("0x" + key !== c.data_key) fail(`${c.name}: combine ${subset}`);
      checked++;
    }
    for (const subset of subsets(indices, c.threshold - 1)) {
      if (subset.length === 0) continue;
      let key = null;
      try {
        key = hex(combineMnemonics(subset.map((i) => c.shares[i])));
      } catch {
        // refused, as it must be
      }
      if (key !== null && "0x" + key === c.data_key) fail(`${c.name}: t-1 shares ${subset}`);
      checked++;
    }
    // Sealed to the custody keys: each gateway opens its own share with eciesjs.
    c.sealed_shares.forEach((sealed, i) => {
      const share = decrypt(unhex(c.members[i].custody_private_key), Buffer.from(sealed, "base64"));
      if (!share.equals(shares[i])) fail(`${c.name}: custody unseal ${i}`);
      checked++;
    });
    // Released to the requester: the portal's path, commitments from the manifest.
    const manifest = JSON.parse(c.manifest);
    const commitments = manifest.members.map((m) => m.commitment);
    const released = Object.fromEntries(c.released.map((b64, i) => [i, b64]));
    const result = recover({
      requester_private_key: c.requester_private_key,
      threshold: manifest.threshold,
      commitments,
      released,
    });
    if ("0x" + result.data_key !== c.data_key || result.bad.length) fail(`${c.name}: released`);
    checked++;
    if (c.tampered) {
      const { index, share, released: sealedTampered } = c.tampered;
      if (sha256(Buffer.from(share, "ascii")).equals(unhex(commitments[index])))
        fail(`${c.name}: tampered share matches its commitment`);
      const withBad = recover({
        requester_private_key: c.requester_private_key,
        threshold: manifest.threshold,
        commitments,
        released: { ...released, [index]: sealedTampered },
      });
      if ("0x" + withBad.data_key !== c.data_key) fail(`${c.name}: honest shares after a bad one`);
      if (JSON.stringify(withBad.bad) !== JSON.stringify([index])) fail(`${c.name}: bad not named`);
      checked++;
    }
  }
  return { ok: true, checked };
}

function checkOfficial(file) {
  let checked = 0;
  for (const [description, mnemonics, secret] of JSON.parse(readFileSync(file, "utf8"))) {
    let got = "";
    try {
      got = hex(slip39.recoverSecret(mnemonics, "TREZOR"));
    } catch {
      got = "";
    }
    if (got !== secret) fail(`official vector "${description}": got "${got}"`);
    checked++;
  }
  return { ok: true, checked };
}

const [mode, file] = process.argv.slice(2);
const stdin = () => JSON.parse(readFileSync(0, "utf8"));
const handlers = {
  vectors: () => checkVectors(file),
  official: () => checkOfficial(file),
  combine: () => recover(stdin()),
  split: () => split(stdin()),
};
if (!(mode in handlers)) fail(`unknown mode ${mode}`);
process.stdout.write(JSON.stringify(handlers[mode]()) + "\n");
