"""Sign-In with Ethereum (EIP-4361): a strict parser and a verifier.

The PyPI ``siwe`` package pins ``web3<8``, so this module implements the message grammar itself
and leaves the cryptography to libraries: ``eth_account`` (EIP-191 ``personal_sign`` hashing
and address recovery) and ``coincurve`` (public-key recovery).

Grammar (EIP-4361 ABNF; lines separated by a single ``\\n``, no ``\\r``, no trailing newline)::

    [scheme "://"] domain " wants you to sign in with your Ethereum account:"
    address                      ; 0x + 40 hex, EIP-55 checksummed (all-lower/upper rejected)
    ""
    [statement                   ; reserved / unreserved / " " chars of RFC 3986, non-empty
    ""]
    "URI: " uri                  ; RFC 3986 URI
    "Version: 1"
    "Chain ID: " 1*DIGIT
    "Nonce: " 8*(ALPHA / DIGIT)
    "Issued At: " date-time      ; RFC 3339, with a time zone
    ["Expiration Time: " date-time]
    ["Not Before: " date-time]
    ["Request ID: " *pchar]
    ["Resources:" *("\\n- " uri)]

The optional fields must appear in that order, each at most once. Without a statement the
message has two empty lines after the address (this is what the reference npm ``siwe``
``prepareMessage()`` writes, and what the ABNF says). ``domain`` is an RFC 3986 authority.

:func:`verify` checks, in order: grammar, domain (case-insensitive), URI (exact, when an
expected URI is given), chain id, time window (``now`` must be in ``[not_before,
expiration_time)``; ``issued_at`` may not be more than ``clock_skew`` in the future nor, with
``max_age``, too old), then the signature: 65 bytes ``r || s || v`` with ``v`` in {0, 1, 27, 28},
over the EIP-191 ``personal_sign`` hash of the exact message text. It returns the checksummed
address and the 65-byte uncompressed public key recovered from the signature (the gateway
seals data keys to it). Single use of the nonce is the caller's job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar

import coincurve
from eth_account import Account
from eth_account.messages import defunct_hash_message, encode_defunct
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ledger.protocol.errors import DomainError

__all__ = [
    "AddressMismatch",
    "BadSignature",
    "ChainMismatch",
    "DomainMismatch",
    "Expired",
    "MalformedMessage",
    "NotYetValid",
    "SiweError",
    "SiweMessage",
    "UriMismatch",
    "VerifiedLogin",
    "parse_message",
    "recover_signer",
    "verify",
]


# -- errors ---------------------------------------------------------------------------------


class SiweError(DomainError):
    """Root of Sign-In with Ethereum failures."""

    code: ClassVar[str] = "siwe_error"


class MalformedMessage(SiweError):
    code: ClassVar[str] = "siwe_malformed_message"

    def __init__(self, *, reason: str, line: int | None = None) -> None:
        where = f" (line {line + 1})" if line is not None else ""
        super().__init__(f"malformed SIWE message{where}: {reason}", reason=reason, line=line)
        self.reason = reason
        self.line = line


class DomainMismatch(SiweError):
    code: ClassVar[str] = "siwe_domain_mismatch"

    def __init__(self, *, expected: str, actual: str) -> None:
        super().__init__(
            f"SIWE domain {actual!r} is not {expected!r}", expected=expected, actual=actual
        )
        self.expected = expected
        self.actual = actual


class UriMismatch(SiweError):
    code: ClassVar[str] = "siwe_uri_mismatch"

    def __init__(self, *, expected: str, actual: str) -> None:
        super().__init__(
            f"SIWE URI {actual!r} is not {expected!r}", expected=expected, actual=actual
        )
        self.expected = expected
        self.actual = actual


class ChainMismatch(SiweError):
    code: ClassVar[str] = "siwe_chain_mismatch"

    def __init__(self, *, expected: int, actual: int) -> None:
        super().__init__(
            f"SIWE chain id {actual} is not {expected}", expected=expected, actual=actual
        )
        self.expected = expected
        self.actual = actual


class Expired(SiweError):
    code: ClassVar[str] = "siwe_expired"

    def __init__(self, *, expired_at: datetime, now: datetime) -> None:
        super().__init__(
            f"SIWE message expired at {expired_at.isoformat()} (now {now.isoformat()})",
            expired_at=expired_at.isoformat(),
            now=now.isoformat(),
        )
        self.expired_at = expired_at
        self.now = now


class NotYetValid(SiweError):
    code: ClassVar[str] = "siwe_not_yet_valid"

    def __init__(self, *, valid_from: datetime, now: datetime) -> None:
        super().__init__(
            f"SIWE message not valid before {valid_from.isoformat()} (now {now.isoformat()})",
            valid_from=valid_from.isoformat(),
            now=now.isoformat(),
        )
        self.valid_from = valid_from
        self.now = now


class BadSignature(SiweError):
    code: ClassVar[str] = "siwe_bad_signature"

    def __init__(self, *, reason: str) -> None:
        super().__init__(f"bad SIWE signature: {reason}", reason=reason)
        self.reason = reason


class AddressMismatch(SiweError):
    code: ClassVar[str] = "siwe_address_mismatch"

    def __init__(self, *, message_address: str, recovered_address: str) -> None:
        super().__init__(
            f"SIWE message is for {message_address} but was signed by {recovered_address}",
            message_address=message_address,
            recovered_address=recovered_address,
        )
        self.message_address = message_address
        self.recovered_address = recovered_address


# -- grammar --------------------------------------------------------------------------------

_HEX = r"[0-9A-Fa-f]"
_PCT = rf"%{_HEX}{{2}}"
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_USERINFO = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*"
_REG_NAME = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*"
_IP_LITERAL = r"\[[0-9A-Fa-f:.vV]+\]"
_AUTHORITY = rf"(?:{_USERINFO}@)?(?:{_IP_LITERAL}|{_REG_NAME})(?::[0-9]*)?"
_URI_CHARS = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@/?#\[\]]|{_PCT})"
_URI = rf"{_SCHEME}:{_URI_CHARS}*"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_DATE_TIME = (
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})[Tt]"
    r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})(?P<f>\.[0-9]+)?"
    r"(?P<tz>[Zz]|[+\-][0-9]{2}:[0-9]{2})"
)

_HEADER_SUFFIX = " wants you to sign in with your Ethereum account:"
_HEADER_RE = re.compile(rf"(?:(?P<scheme>{_SCHEME})://)?(?P<domain>{_AUTHORITY})")
_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_STATEMENT_RE = re.compile(rf"[{_UNRESERVED}{_SUB_DELIMS}:/?#\[\]@ ]+")
_URI_RE = re.compile(_URI)
_CHAIN_RE = re.compile(r"[0-9]+")
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}")
_DATE_TIME_RE = re.compile(_DATE_TIME)
_REQUEST_ID_RE = re.compile(rf"{_PCHAR}*")


def _parse_datetime(text: str, *, line: int) -> datetime:
    m = _DATE_TIME_RE.fullmatch(text)
    if m is None:
        raise MalformedMessage(reason=f"not an RFC 3339 date-time: {text!r}", line=line)
    frac = m["f"] or ""
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    tz_text = m["tz"]
    if tz_text in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if tz_text[0] == "+" else -1
        hours, minutes = int(tz_text[1:3]), int(tz_text[4:6])
        if hours > 23 or minutes > 59:
            raise MalformedMessage(reason=f"bad time offset in {text!r}", line=line)
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        second = int(m["s"])
        leap = second == 60  # RFC 3339 allows a leap second; datetime does not
        value = datetime(
            int(m["y"]),
            int(m["mo"]),
            int(m["d"]),
            int(m["h"]),
            int(m["mi"]),
            59 if leap else second,
            micro,
            tzinfo=tz,
        )
    except ValueError:
        raise MalformedMessage(reason=f"not a valid date-time: {text!r}", line=line) from None
    return value


def _format_datetime(value: datetime) -> str:
    if value.utcoffset() == timedelta(0):
        # isoformat, not strftime: strftime("%Y") does not pad years before 1000 to 4 digits.
        text = value.astimezone(UTC).isoformat(timespec="milliseconds")
        return text.removesuffix("+00:00") + "Z"
    return value.isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class SiweMessage:
    """A parsed EIP-4361 message. ``resources`` is ``None`` without a ``Resources:`` line."""

    domain: str
    address: str
    uri: str
    version: str
    chain_id: int
    nonce: str
    issued_at: datetime
    scheme: str | None = None
    statement: str | None = None
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None

    def prepare_message(self) -> str:
        """The EIP-4361 text for these fields (datetimes as ``YYYY-MM-DDTHH:MM:SS.mmmZ``)."""
        prefix = f"{self.scheme}://{self.domain}" if self.scheme else self.domain
        lines = [prefix + _HEADER_SUFFIX, self.address, ""]
        if self.statement is not None:
            lines += [self.statement, ""]
        else:
            lines += [""]
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {_format_datetime(self.issued_at)}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {_format_datetime(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {_format_datetime(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources is not None:
            lines.append("Resources:")
            lines += [f"- {r}" for r in self.resources]
        text = "\n".join(lines)
        parse_message(text)  # refuse to produce what we would not accept
        return text


def _field(lines: list[str], i: int, tag: str) -> str | None:
    """Value of ``tag: value`` at line ``i``, or None when line ``i`` is not that field."""
    if i < len(lines) and lines[i].startswith(tag + ": "):
        return lines[i][len(tag) + 2 :]
    return None


def _require(lines: list[str], i: int, tag: str) -> str:
    value = _field(lines, i, tag)
    if value is None:
        raise MalformedMessage(reason=f"expected '{tag}: ...'", line=min(i, len(lines) - 1))
    return value


def parse_message(text: str) -> SiweMessage:
    """Parse an EIP-4361 message strictly; raise :class:`MalformedMessage` on any deviation."""
    if not isinstance(text, str):
        raise MalformedMessage(reason="message must be text")
    if "\r" in text:
        raise MalformedMessage(reason="carriage return in message (lines end with \\n only)")
    lines = text.split("\n")
    if len(lines) < 9:
        raise MalformedMessage(reason="too few lines")

    if not lines[0].endswith(_HEADER_SUFFIX):
        raise MalformedMessage(reason="bad header line", line=0)
    header = _HEADER_RE.fullmatch(lines[0][: -len(_HEADER_SUFFIX)])
    if header is None or not header["domain"]:
        raise MalformedMessage(reason="bad domain", line=0)

    address = lines[1]
    if not _ADDRESS_RE.fullmatch(address):
        raise MalformedMessage(reason="bad address", line=1)
    if to_checksum_address(address) != address:
        raise MalformedMessage(reason="address is not EIP-55 checksummed", line=1)
    if lines[2] != "":
        raise MalformedMessage(reason="expected an empty line after the address", line=2)

    statement: str | None = None
    if lines[3] == "":
        i = 4
    else:
        statement = lines[3]
        if not _STATEMENT_RE.fullmatch(statement):
            raise MalformedMessage(reason="statement has characters outside RFC 3986", line=3)
        if lines[4] != "":
            raise MalformedMessage(reason="expected an empty line after the statement", line=4)
        i = 5

    uri = _require(lines, i, "URI")
    if not _URI_RE.fullmatch(uri):
        raise MalformedMessage(reason="bad URI", line=i)
    version = _require(lines, i + 1, "Version")
    if version != "1":
        raise MalformedMessage(reason=f"unsupported version {version!r}", line=i + 1)
    chain_text = _require(lines, i + 2, "Chain ID")
    if not _CHAIN_RE.fullmatch(chain_text):
        raise MalformedMessage(reason="bad chain id", line=i + 2)
    nonce = _require(lines, i + 3, "Nonce")
    if not _NONCE_RE.fullmatch(nonce):
        raise MalformedMessage(reason="nonce must be at least 8 letters or digits", line=i + 3)
    issued_at = _parse_datetime(_require(lines, i + 4, "Issued At"), line=i + 4)
    i += 5

    expiration_time = not_before = None
    request_id: str | None = None
    resources: tuple[str, ...] | None = None
    if (value := _field(lines, i, "Expiration Time")) is not None:
        expiration_time = _parse_datetime(value, line=i)
        i += 1
    if (value := _field(lines, i, "Not Before")) is not None:
        not_before = _parse_datetime(value, line=i)
        i += 1
    if (value := _field(lines, i, "Request ID")) is not None:
        request_id = value  # may be empty: request-id = *pchar
        if not _REQUEST_ID_RE.fullmatch(request_id):
            raise MalformedMessage(reason="bad request id", line=i)
        i += 1
    if i < len(lines) and lines[i] == "Resources:":
        i += 1
        found: list[str] = []
        while i < len(lines) and lines[i].startswith("- "):
            resource = lines[i][2:]
            if not _URI_RE.fullmatch(resource):
                raise MalformedMessage(reason="bad resource URI", line=i)
            found.append(resource)
            i += 1
        resources = tuple(found)
    if i != len(lines):
        raise MalformedMessage(reason=f"unexpected line {lines[i]!r}", line=i)

    return SiweMessage(
        scheme=header["scheme"],
        domain=header["domain"],
        address=address,
        statement=statement,
        uri=uri,
        version=version,
        chain_id=int(chain_text),
        nonce=nonce,
        issued_at=issued_at,
        expiration_time=expiration_time,
        not_before=not_before,
        request_id=request_id,
        resources=resources,
    )


# -- verification ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedLogin:
    """A verified sign-in: who, with which key, and the message they signed."""

    address: str
    public_key: bytes  # 65 bytes, uncompressed (0x04 || x || y)
    message: SiweMessage


def _signature_bytes(signature: bytes | str) -> bytes:
    if isinstance(signature, str):
        text = signature[2:] if signature[:2] in ("0x", "0X") else signature
        try:
            signature = bytes.fromhex(text)
        except ValueError:
            raise BadSignature(reason="not hex") from None
    if not isinstance(signature, bytes) or len(signature) != 65:
        raise BadSignature(reason="must be 65 bytes r || s || v")
    v = signature[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise BadSignature(reason=f"recovery id v={signature[64]} not in 0, 1, 27, 28")
    return signature[:64] + bytes([v])


def recover_signer(text: str, signature: bytes | str) -> tuple[str, bytes]:
    """``(checksummed address, 65-byte public key)`` of the EIP-191 ``personal_sign`` signer."""
    sig = _signature_bytes(signature)
    try:
        address: str = Account.recover_message(encode_defunct(text=text), signature=sig)
        digest = bytes(defunct_hash_message(text=text))
        public_key = coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None)
    except Exception as exc:  # eth_keys / coincurve raise several types for invalid points
        raise BadSignature(reason=f"cannot recover a signer ({type(exc).__name__})") from None
    uncompressed = public_key.format(compressed=False)
    derived = to_checksum_address(keccak(uncompressed[1:])[-20:])
    if derived != address:  # both libraries must agree; anything else is a bug or an attack
        raise BadSignature(reason="eth-account and coincurve disagree on the signer")
    return address, uncompressed


def verify(
    message_text: str,
    signature: bytes | str,
    *,
    expected_domain: str,
    expected_chain_id: int,
    now: datetime,
    expected_uri: str | None = None,
    max_age: timedelta | None = None,
    clock_skew: timedelta = timedelta(minutes=1),
) -> VerifiedLogin:
    """Parse and verify a signed SIWE message; see the module docstring for the checks."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if clock_skew < timedelta(0) or (max_age is not None and max_age <= timedelta(0)):
        raise ValueError("clock_skew must be >= 0 and max_age > 0")
    message = parse_message(message_text)
    if message.domain.lower() != expected_domain.lower():
        raise DomainMismatch(expected=expected_domain, actual=message.domain)
    if expected_uri is not None and message.uri != expected_uri:
        raise UriMismatch(expected=expected_uri, actual=message.uri)
    if message.chain_id != expected_chain_id:
        raise ChainMismatch(expected=expected_chain_id, actual=message.chain_id)
    if message.expiration_time is not None and now >= message.expiration_time:
        raise Expired(expired_at=message.expiration_time, now=now)
    # Differences, not sums: issued_at + max_age overflows for a message issued in year 9999.
    if max_age is not None and now - message.issued_at >= max_age:
        raise Expired(expired_at=message.issued_at + max_age, now=now)
    if message.not_before is not None and now < message.not_before:
        raise NotYetValid(valid_from=message.not_before, now=now)
    if message.issued_at - now > clock_skew:
        # issued_at - clock_skew cannot underflow: issued_at > now + clock_skew >= year 1.
        raise NotYetValid(valid_from=message.issued_at - clock_skew, now=now)
    address, public_key = recover_signer(message_text, signature)
    if address != message.address:
        raise AddressMismatch(message_address=message.address, recovered_address=address)
    return VerifiedLogin(address=address, public_key=public_key, message=message)
