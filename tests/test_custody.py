"""Threshold custody (``ledger.protocol.custody``): split, seal, release, combine, and every
refusal, each attack performed against the real libraries (shamir-mnemonic, eciespy)."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coincurve
import ecies
import pytest
import shamir_mnemonic
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.protocol import custody
from ledger.protocol.custody import (
    MAX_MANIFEST_SIZE,
    MAX_MEMBERS,
    BadShare,
    CustodyError,
    CustodyManifest,
    CustodyMember,
    MalformedManifest,
    NotEnoughShares,
    UnsealFailed,
)
from ledger.protocol.errors import DomainError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "custody.json").read_text())
SHAPES = [(1, 1), (2, 3), (3, 5)]
BLOB = b"CLRE\x02 stand-in blob"


def gateway_address(i: int) -> str:
    return to_checksum_address(keccak(b"gateway %d" % i)[-20:])


def federation(n: int) -> tuple[list[CustodyMember], list[bytes]]:
    keys = [custody.new_custody_key() for _ in range(n)]
    members = [
        CustodyMember(gateway=gateway_address(i), custody_key=k[1]) for i, k in enumerate(keys)
    ]
    return members, [k[0] for k in keys]


def make_manifest(
    threshold: int, n: int, data_key: bytes | None = None
) -> tuple[CustodyManifest, list[bytes], bytes]:
    members, privates = federation(n)
    key = data_key or os.urandom(32)
    manifest = custody.build_manifest(
        key,
        threshold=threshold,
        members=members,
        blob_cid="bafkreiblob",
        blob_size=len(BLOB),
        blob_sha256=hashlib.sha256(BLOB).digest(),
    )
    return manifest, privates, key


def released_shares(
    manifest: CustodyManifest, privates: list[bytes], requester_pub: bytes
) -> dict[int, bytes]:
    """Every gateway unseals its share and re-seals it to the requester."""
    return {
        i: custody.reseal_share(custody.unseal_share(manifest, i, priv), requester_pub)
        for i, priv in enumerate(privates)
    }


def manifest_dict(manifest: CustodyManifest) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(manifest.to_bytes())
    return doc


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(("threshold", "n"), SHAPES)
def test_any_threshold_of_released_shares_combine_to_the_key(threshold: int, n: int) -> None:
    manifest, privates, key = make_manifest(threshold, n)
    manifest = CustodyManifest.parse(manifest.to_bytes())  # what a reader fetches from IPFS
    requester_priv, requester_pub = custody.new_custody_key()
    opened = {
        i: custody.open_released_share(sealed, requester_priv)
        for i, sealed in released_shares(manifest, privates, requester_pub).items()
    }
    for size in range(threshold, n + 1):
        for subset in itertools.combinations(range(n), size):
            recovered = custody.recover_key({i: opened[i] for i in subset}, manifest=manifest)
            assert recovered.data_key == key
            assert recovered.bad == ()


@pytest.mark.parametrize(("threshold", "n"), [(2, 3), (3, 5)])
def test_fewer_than_threshold_shares_do_not_combine(threshold: int, n: int) -> None:
    manifest, privates, key = make_manifest(threshold, n)
    shares = {i: custody.unseal_share(manifest, i, p) for i, p in enumerate(privates)}
    for size in range(threshold):
        for subset in itertools.combinations(range(n), size):
            with pytest.raises(NotEnoughShares) as info:
                custody.combine_shares({i: shares[i] for i in subset}, manifest=manifest)
            assert (info.value.have, info.value.need, info.value.bad) == (size, threshold, [])
            if not subset:
                continue
            # Past our own count check: the library itself refuses t-1 shares.
            with pytest.raises(shamir_mnemonic.MnemonicError):
                shamir_mnemonic.combine_mnemonics([shares[i].decode() for i in subset])
    # No share holds the key in the clear (or its encrypted master secret, for t >= 2).
    for share in shares.values():
        value = shamir_mnemonic.Share.from_mnemonic(share.decode()).value
        assert value != key
        assert key.hex() not in share.decode()


def test_one_of_n_shares_each_open_the_key() -> None:
    manifest, privates, key = make_manifest(1, 3)
    for i, priv in enumerate(privates):
        share = custody.unseal_share(manifest, i, priv)
        assert custody.combine_shares({i: share}, manifest=manifest) == key


@settings(max_examples=25, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    shape=st.sampled_from([(t, n) for n in range(1, 6) for t in range(1, n + 1)]),
    data=st.data(),
)
def test_split_and_combine_round_trip(key: bytes, shape: tuple[int, int], data: Any) -> None:
    threshold, n = shape
    members, _ = federation(n)
    shares = custody.split_key(key, threshold=threshold, n=n)
    sealed = custody.SealedShares(
        threshold=threshold,
        members=tuple(members),
        sealed_shares=tuple(
            custody.seal_share(s, m.custody_key) for s, m in zip(shares, members, strict=True)
        ),
        commitments=tuple(custody.share_commitment(s) for s in shares),
    )
    manifest = sealed.manifest(blob_cid="bafy", blob_size=1, blob_sha256=bytes(32))
    subset = data.draw(st.lists(st.sampled_from(range(n)), min_size=threshold, unique=True))
    assert custody.combine_shares({i: shares[i] for i in subset}, manifest=manifest) == key


def test_two_step_form_matches_the_manifest() -> None:
    members, _ = federation(3)
    sealed = custody.split_and_seal(os.urandom(32), threshold=2, members=members)
    manifest = sealed.manifest(blob_cid="bafy", blob_size=3, blob_sha256=bytes(32))
    assert sealed.custody_set() == manifest.custody_set() == custody.custody_set_hash(2, members)
    assert sealed.shares_commitment() == manifest.shares_commitment()
    assert [m.sealed_share_bytes for m in manifest.members] == list(sealed.sealed_shares)
    assert manifest.index_of(members[2].gateway.lower()) == 2
    with pytest.raises(CustodyError):
        manifest.index_of(gateway_address(99))


# -- a lying gateway ------------------------------------------------------------------------


def forged_shares(
    threshold: int, n: int, index: int, genuine: dict[int, bytes]
) -> dict[str, bytes]:
    """Shares a lying gateway could hand out for ``index`` instead of its own."""
    other = custody.split_key(os.urandom(32), threshold=threshold, n=n)[index]
    words = genuine[index].decode().split()
    words[10] = "academic" if words[10] != "academic" else "acid"
    return {
        "a valid share of another key": other,
        "a word changed": " ".join(words).encode(),
        "another member's share": genuine[(index + 1) % n],
    }


@pytest.mark.parametrize(
    "forgery", ["a valid share of another key", "a word changed", "another member's share"]
)
def test_a_tampered_share_is_named_and_honest_shares_still_open(forgery: str) -> None:
    manifest, privates, key = make_manifest(3, 5)
    shares = {i: custody.unseal_share(manifest, i, p) for i, p in enumerate(privates)}
    liar = 4
    bad_share = forged_shares(3, 5, liar, shares)[forgery]
    given_shares = {**shares, liar: bad_share}

    recovered = custody.recover_key(given_shares, manifest=manifest)
    assert recovered.data_key == key
    assert [(b.index, b.gateway) for b in recovered.bad] == [(liar, manifest.members[liar].gateway)]
    assert recovered.bad_gateways == [manifest.members[liar].gateway]
    with pytest.raises(BadShare) as info:
        custody.verify_share(manifest, liar, bad_share)
    assert (info.value.index, info.value.gateway) == (liar, manifest.members[liar].gateway)

    # Only t shares, one of them bad: refused, the liar named.
    with pytest.raises(NotEnoughShares) as short:
        custody.combine_shares({0: shares[0], 1: shares[1], liar: bad_share}, manifest=manifest)
    assert (short.value.have, short.value.need) == (2, 3)
    assert short.value.bad == [manifest.members[liar].gateway]
    assert short.value.to_dict()["bad"] == manifest.members[liar].gateway


def test_without_commitments_a_forged_share_is_not_attributable() -> None:
    """What the commitments buy: SLIP-39 alone refuses a mixed set but cannot say who lied."""
    manifest, privates, _ = make_manifest(2, 3)
    shares = {i: custody.unseal_share(manifest, i, p) for i, p in enumerate(privates)}
    other = custody.split_key(os.urandom(32), threshold=2, n=3)[2]
    with pytest.raises(shamir_mnemonic.MnemonicError):
        shamir_mnemonic.combine_mnemonics([shares[0].decode(), other.decode()])
    with pytest.raises(NotEnoughShares) as info:
        custody.combine_shares({0: shares[0], 2: other}, manifest=manifest)
    assert info.value.bad == [manifest.members[2].gateway]


def test_gateway_refuses_a_manifest_whose_sealed_share_was_swapped() -> None:
    manifest, privates, _ = make_manifest(2, 3)
    doc = manifest_dict(manifest)
    # Someone re-seals a different (valid) share to gateway 1's real key.
    other = custody.split_key(os.urandom(32), threshold=2, n=3)[1]
    resealed = custody.seal_share(other, manifest.members[1].custody_key_bytes)
    doc["members"][1]["sealed_share"] = base64.b64encode(resealed).decode()
    swapped = CustodyManifest.parse(canonical(doc))
    with pytest.raises(BadShare) as info:
        custody.unseal_share(swapped, 1, privates[1])
    assert info.value.gateway == manifest.members[1].gateway


def test_commitment_valid_shares_that_do_not_combine_are_a_custody_error() -> None:
    """A dishonest centre commits to shares of two different splits, or to a share at another
    member's index: the commitments match, the combination is refused all the same."""
    members, _ = federation(3)
    first = custody.split_key(os.urandom(32), threshold=2, n=3)
    second = custody.split_key(os.urandom(32), threshold=2, n=3)
    cases = [
        ([first[0], first[1], second[2]], (0, 2)),  # two splits mixed
        ([first[1], first[0], first[2]], (0, 2)),  # share 1 committed as member 0's
    ]
    for shares, combined in cases:
        manifest = custody.SealedShares(
            threshold=2,
            members=tuple(members),
            sealed_shares=tuple(
                custody.seal_share(s, m.custody_key) for s, m in zip(shares, members, strict=True)
            ),
            commitments=tuple(custody.share_commitment(s) for s in shares),
        ).manifest(blob_cid="bafy", blob_size=1, blob_sha256=bytes(32))
        with pytest.raises(CustodyError) as info:
            custody.combine_shares({i: shares[i] for i in combined}, manifest=manifest)
        assert type(info.value) is CustodyError


@pytest.mark.parametrize(
    ("extendable", "exponent"), [(False, 1), (True, 0)], ids=["iteration exponent 1", "extendable"]
)
def test_shares_with_other_slip39_parameters_are_refused(extendable: bool, exponent: int) -> None:
    """A manifest author must not make every reader run 2^e times the PBKDF2 work (e up to 15,
    minutes of CPU in a browser): only the parameters we write are combined."""
    members, _ = federation(3)
    key = os.urandom(32)
    groups = shamir_mnemonic.generate_mnemonics(
        2, [(1, 1)] * 3, key, b"", extendable=extendable, iteration_exponent=exponent
    )
    shares = [g[0].encode() for g in groups]
    assert shamir_mnemonic.combine_mnemonics([s.decode() for s in shares[:2]]) == key
    manifest = custody.SealedShares(
        threshold=2,
        members=tuple(members),
        sealed_shares=tuple(
            custody.seal_share(s, m.custody_key) for s, m in zip(shares, members, strict=True)
        ),
        commitments=tuple(custody.share_commitment(s) for s in shares),
    ).manifest(blob_cid="bafy", blob_size=1, blob_sha256=bytes(32))
    with pytest.raises(CustodyError, match="does not fit the manifest"):
        custody.combine_shares({0: shares[0], 1: shares[1]}, manifest=manifest)


def test_a_manifest_is_checked_against_the_chain_anchors() -> None:
    manifest, _, _ = make_manifest(2, 3)
    other, _, _ = make_manifest(2, 3)
    manifest.check_anchors(
        custody_set=manifest.custody_set(), shares_commitment=manifest.shares_commitment()
    )
    with pytest.raises(CustodyError, match="custody set"):
        manifest.check_anchors(
            custody_set=other.custody_set(), shares_commitment=manifest.shares_commitment()
        )
    with pytest.raises(CustodyError, match="shares commitment"):
        manifest.check_anchors(
            custody_set=manifest.custody_set(), shares_commitment=other.shares_commitment()
        )


def test_share_indices_must_name_members() -> None:
    manifest, privates, _ = make_manifest(2, 3)
    share = custody.unseal_share(manifest, 0, privates[0])
    for index in (3, -1, True, "0"):
        with pytest.raises(MalformedManifest):
            custody.combine_shares({index: share, 1: share}, manifest=manifest)  # type: ignore[dict-item]


# -- sealing --------------------------------------------------------------------------------


def test_a_share_sealed_to_gateway_a_does_not_open_with_gateway_b_key() -> None:
    manifest, privates, _ = make_manifest(2, 3)
    sealed_a = manifest.members[0].sealed_share_bytes
    with pytest.raises(ValueError, match=r"(?i)mac|tag|decrypt"):
        ecies.decrypt(privates[1], sealed_a)  # the primitive itself refuses
    with pytest.raises(UnsealFailed) as info:
        custody.unseal_share(manifest, 0, privates[1])
    assert info.value.index == 0
    outsider, _ = custody.new_custody_key()
    with pytest.raises(UnsealFailed):
        custody.unseal_share(manifest, 0, outsider)
    assert custody.share_commitment(custody.unseal_share(manifest, 0, privates[0])) == (
        manifest.members[0].commitment_bytes
    )


def test_a_resealed_share_opens_only_with_the_requester_key() -> None:
    manifest, privates, _ = make_manifest(2, 3)
    share = custody.unseal_share(manifest, 2, privates[2])
    requester_priv, _ = custody.new_custody_key()
    pub = coincurve.PrivateKey(requester_priv).public_key
    forms = [
        pub.format(compressed=True),
        pub.format(compressed=False),
        pub.format(compressed=False)[1:],
    ]
    for form in forms:
        sealed = custody.reseal_share(share, form)
        assert custody.open_released_share(sealed, requester_priv) == share
        for wrong in (privates[2], custody.new_custody_key()[0]):
            with pytest.raises(UnsealFailed):
                custody.open_released_share(sealed, wrong)
    tampered = bytearray(custody.reseal_share(share, forms[0]))
    tampered[-1] ^= 1
    with pytest.raises(UnsealFailed):
        custody.open_released_share(bytes(tampered), requester_priv)


@pytest.mark.parametrize(
    "pubkey",
    [b"", b"\x04" + bytes(64), b"\x02" + bytes(32), b"\x05" + bytes(32), bytes(65), "02" * 33],
)
def test_reseal_refuses_what_is_not_a_public_key(pubkey: Any) -> None:
    manifest, privates, _ = make_manifest(1, 1)
    share = custody.unseal_share(manifest, 0, privates[0])
    with pytest.raises(MalformedManifest):
        custody.reseal_share(share, pubkey)


def test_keys_and_inputs_are_checked() -> None:
    private, public = custody.new_custody_key()
    assert (len(private), len(public)) == (32, 33)
    assert custody.custody_public_key(private) == public
    for bad in (bytes(32), b"\xff" * 32, bytes(31)):
        with pytest.raises(MalformedManifest):
            custody.custody_public_key(bad)
    with pytest.raises(MalformedManifest):
        custody.split_key(bytes(16), threshold=1, n=1)
    for threshold, n in ((0, 3), (4, 3), (1, 17), (True, 2)):
        with pytest.raises(MalformedManifest):
            custody.split_key(bytes(32), threshold=threshold, n=n)
    with pytest.raises(MalformedManifest):
        CustodyMember(gateway="0x1234", custody_key=public)
    with pytest.raises(MalformedManifest):  # mixed case, wrong EIP-55 checksum
        CustodyMember(gateway="0x" + "aB" * 20, custody_key=public)
    with pytest.raises(MalformedManifest):
        CustodyMember(gateway=gateway_address(1), custody_key=b"\x02" + bytes(32))
    member = CustodyMember(gateway=gateway_address(1).lower(), custody_key=public)
    assert member.gateway == gateway_address(1)
    with pytest.raises(MalformedManifest):  # duplicate gateway / custody key in a set
        custody.custody_set_hash(1, [member, member])
    assert issubclass(MalformedManifest, CustodyError)
    assert issubclass(CustodyError, DomainError)
    assert (BadShare.code, NotEnoughShares.code) == ("bad_share", "not_enough_shares")


# -- manifest parsing -----------------------------------------------------------------------


def test_manifest_bytes_round_trip_canonically() -> None:
    manifest, _, _ = make_manifest(2, 3)
    raw = manifest.to_bytes()
    assert raw == canonical(json.loads(raw))
    assert CustodyManifest.parse(raw) == manifest
    with pytest.raises(MalformedManifest, match="canonical"):
        CustodyManifest.parse(json.dumps(json.loads(raw), indent=1).encode())


def _mutations() -> dict[str, Any]:
    def member(doc: dict[str, Any], **changes: Any) -> dict[str, Any]:
        doc["members"][0].update(changes)
        return doc

    def extra_members(count: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def mutate(doc: dict[str, Any]) -> dict[str, Any]:
            template = doc["members"][0]
            doc["members"] = [
                {
                    **template,
                    "gateway": gateway_address(100 + i),
                    "custody_key": "0x" + custody.new_custody_key()[1].hex(),
                    "commitment": "0x" + os.urandom(32).hex(),
                }
                for i in range(count)
            ]
            return doc

        return mutate

    return {
        "wrong version": lambda d: {**d, "version": 2},
        "version as a string": lambda d: {**d, "version": "1"},
        "threshold 0": lambda d: {**d, "threshold": 0},
        "threshold above n": lambda d: {**d, "threshold": 4},
        "threshold as a bool": lambda d: {**d, "threshold": True},
        "17 members": extra_members(MAX_MEMBERS + 1),
        "33 members": extra_members(33),
        "no members": lambda d: {**d, "members": []},
        "duplicate gateway": lambda d: member(d, gateway=d["members"][1]["gateway"]),
        "duplicate custody key": lambda d: member(d, custody_key=d["members"][1]["custody_key"]),
        "duplicate commitment": lambda d: member(d, commitment=d["members"][1]["commitment"]),
        "gateway not checksummed": lambda d: member(d, gateway=d["members"][0]["gateway"].lower()),
        "gateway not an address": lambda d: member(d, gateway="0x1234"),
        "custody key not hex": lambda d: member(d, custody_key="0x02" + "zz" * 32),
        "custody key uncompressed": lambda d: member(d, custody_key="0x04" + "11" * 64),
        "custody key off the curve": lambda d: member(d, custody_key="0x02" + "00" * 32),
        "commitment short": lambda d: member(d, commitment="0x" + "11" * 31),
        "commitment upper-case": lambda d: member(d, commitment="0x" + "AB" * 32),
        "sealed share not base64": lambda d: member(d, sealed_share="!!!!" * 60),
        "sealed share url-safe base64": lambda d: member(
            d,
            sealed_share=d["members"][0]["sealed_share"].replace("+", "-").replace("/", "_") + "-_",
        ),
        "sealed share too long": lambda d: member(
            d, sealed_share=base64.b64encode(bytes(custody.MAX_SEALED_SHARE_SIZE + 1)).decode()
        ),
        "sealed share too short": lambda d: member(
            d, sealed_share=base64.b64encode(bytes(100)).decode()
        ),
        "blob sha256 not hex": lambda d: {**d, "blob_sha256": "0x" + "g" * 64},
        "blob size negative": lambda d: {**d, "blob_size": -1},
        "blob size beyond 2^53": lambda d: {**d, "blob_size": 2**53},
        "blob cid with a slash": lambda d: {**d, "blob_cid": "bafy/../x"},
        "extra top-level field": lambda d: {**d, "kek": "0x00"},
        "extra member field": lambda d: member(d, data_key="0x00"),
        "missing field": lambda d: {k: v for k, v in d.items() if k != "blob_cid"},
    }


#: The part of the refusal's reason that says it was refused for the right thing.
REASONS = {
    "wrong version": "version 2",
    "version as a string": "version",
    "threshold 0": "threshold",
    "threshold above n": "threshold exceeds",
    "threshold as a bool": "threshold",
    "17 members": "at most 16",
    "33 members": "at most 16",
    "no members": "members",
    "duplicate gateway": "duplicate gateway",
    "duplicate custody key": "duplicate custody_key",
    "duplicate commitment": "duplicate commitment",
    "gateway not checksummed": "EIP-55",
    "gateway not an address": "gateway",
    "custody key not hex": "custody_key",
    "custody key uncompressed": "custody_key",
    "custody key off the curve": "not a point",
    "commitment short": "commitment",
    "commitment upper-case": "commitment",
    "sealed share not base64": "base64",
    "sealed share url-safe base64": "base64",
    "sealed share too long": "sealed_share",
    "sealed share too short": "size of a sealed share",
    "blob sha256 not hex": "blob_sha256",
    "blob size negative": "blob_size",
    "blob size beyond 2^53": "blob_size",
    "blob cid with a slash": "blob_cid",
    "extra top-level field": "kek: Extra inputs",
    "extra member field": "data_key: Extra inputs",
    "missing field": "blob_cid: Field required",
}


def test_every_mutation_has_its_reason() -> None:
    assert set(REASONS) == set(_mutations())


@pytest.mark.parametrize("mutation", sorted(_mutations()))
def test_manifest_parse_refuses(mutation: str) -> None:
    manifest, _, _ = make_manifest(2, 3)
    raw = canonical(_mutations()[mutation](manifest_dict(manifest)))
    with pytest.raises(MalformedManifest) as info:
        CustodyManifest.parse(raw)
    assert info.value.what == "custody manifest"
    assert REASONS[mutation] in info.value.reason


@pytest.mark.parametrize(
    "raw",
    [b"", b"null", b"[]", b"{", b"\xff\xfe", "not bytes", b"{" * (MAX_MANIFEST_SIZE + 1)],
)
def test_manifest_parse_refuses_garbage(raw: Any) -> None:
    with pytest.raises(MalformedManifest):
        CustodyManifest.parse(raw)


def test_oversized_manifest_is_refused_before_parsing() -> None:
    manifest, _, _ = make_manifest(2, 3)
    doc = manifest_dict(manifest)
    doc["blob_cid"] = "b" * (MAX_MANIFEST_SIZE)  # valid JSON, otherwise only the CID is wrong
    with pytest.raises(MalformedManifest, match="larger than"):
        CustodyManifest.parse(canonical(doc))


# -- the hashes that go on the chain --------------------------------------------------------


def independent_set_hash(threshold: int, gateways: list[str], keys: list[bytes]) -> bytes:
    return keccak(abi_encode(["uint8", "address[]", "bytes[]"], [threshold, gateways, keys]))


def test_custody_set_hash_is_keccak_of_the_abi_encoding() -> None:
    for case in VECTORS["cases"]:
        gateways = [m["gateway"] for m in case["members"]]
        keys = [bytes.fromhex(m["custody_key"][2:]) for m in case["members"]]
        members = [
            CustodyMember(gateway=g, custody_key=k) for g, k in zip(gateways, keys, strict=True)
        ]
        expected = independent_set_hash(case["threshold"], gateways, keys)
        assert custody.custody_set_hash(case["threshold"], members) == expected
        assert case["custody_set_hash"] == "0x" + expected.hex()


def test_custody_set_hash_changes_with_every_key_the_order_and_the_threshold() -> None:
    members, _ = federation(4)
    base = custody.custody_set_hash(2, members)
    seen = {base}
    for i in range(4):
        changed = list(members)
        changed[i] = CustodyMember(
            gateway=members[i].gateway, custody_key=custody.new_custody_key()[1]
        )
        seen.add(custody.custody_set_hash(2, changed))
        changed = list(members)
        changed[i] = CustodyMember(
            gateway=gateway_address(50 + i), custody_key=members[i].custody_key
        )
        seen.add(custody.custody_set_hash(2, changed))
    for order in itertools.permutations(range(4)):
        if order != (0, 1, 2, 3):
            seen.add(custody.custody_set_hash(2, [members[i] for i in order]))
    for threshold in (1, 3, 4):
        seen.add(custody.custody_set_hash(threshold, members))
    assert len(seen) == 1 + 8 + 23 + 3


def test_shares_commitment_changes_with_every_commitment() -> None:
    commitments = [os.urandom(32) for _ in range(5)]
    base = custody.shares_commitment(commitments)
    assert base == keccak(abi_encode(["bytes32[]"], [commitments]))
    for i in range(5):
        for bit in (0, 255):
            changed = list(commitments)
            flipped = int.from_bytes(changed[i], "big") ^ (1 << bit)
            changed[i] = flipped.to_bytes(32, "big")
            assert custody.shares_commitment(changed) != base
    assert custody.shares_commitment(commitments[::-1]) != base
    assert custody.shares_commitment(commitments[:4]) != base
    with pytest.raises(MalformedManifest):
        custody.shares_commitment([bytes(31)])


# -- the shared vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_shared_vectors_combine_in_python(case: dict[str, Any]) -> None:
    key = bytes.fromhex(case["data_key"][2:])
    manifest = CustodyManifest.parse(case["manifest"].encode())
    assert "0x" + manifest.custody_set().hex() == case["custody_set_hash"]
    assert "0x" + manifest.shares_commitment().hex() == case["shares_commitment"]
    shares = [s.encode() for s in case["shares"]]
    assert ["0x" + custody.share_commitment(s).hex() for s in shares] == case["commitments"]
    n, threshold = len(shares), case["threshold"]
    for subset in itertools.combinations(range(n), threshold):
        assert custody.combine_shares({i: shares[i] for i in subset}, manifest=manifest) == key
    for i, member in enumerate(case["members"]):
        private = bytes.fromhex(member["custody_private_key"][2:])
        assert custody.custody_public_key(private).hex() == member["custody_key"][2:]
        assert custody.unseal_share(manifest, i, private) == shares[i]
    requester = bytes.fromhex(case["requester_private_key"][2:])
    opened = {
        i: custody.open_released_share(base64.b64decode(s), requester)
        for i, s in enumerate(case["released"])
    }
    assert opened == dict(enumerate(shares))
    if "tampered" in case:
        t = case["tampered"]
        bad = custody.open_released_share(base64.b64decode(t["released"]), requester)
        assert bad == t["share"].encode()
        recovered = custody.recover_key({**opened, t["index"]: bad}, manifest=manifest)
        assert recovered.data_key == key
        assert recovered.bad_gateways == [t["gateway"]]
