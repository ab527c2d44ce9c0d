"""Personal data of volunteers: validation, keyed pseudonyms, field encryption, key sealing.

Nothing here touches the database. A district secret (32 random bytes) is
the root of everything: two sub-keys are derived from it with HKDF, one for
HMAC pseudonyms (matching the same person across streets without holding the
ID number) and one for AES-256-GCM field encryption (the copy a module
function needs, e.g. a certificate). Every ciphertext and pseudonym names the
key id it was made with, so a key can be rotated later without guessing.

The secret travels down the tree sealed to the receiving node's X25519 key
(ECDH with an ephemeral key, HKDF, AES-GCM): the sync transport carries it
like any other row but only the addressee can open it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import re
import unicodedata

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from hemei.core import InvalidInput

SECRET_BYTES = 32
_NONCE = 12

# GB 11643-1999: 17 digits, then a check character (ISO 7064 MOD 11-2).
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# ASCII digits only: "\d" also takes other scripts' digits, which would give one number two pseudonyms.
_ID_SHAPE = re.compile(r"^[1-9][0-9]{16}[0-9X]$")
_PHONE_SHAPE = re.compile(r"^\+?[0-9]{5,20}$")


def id_check_char(first17: str) -> str:
    """The check character of a resident ID number from its first 17 digits."""
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u2060"))


def normalize_id_number(text: str) -> str:
    """A valid 18-character resident ID number, upper-cased; InvalidInput otherwise.

    Checks the shape, the birth date it carries and the check character, so a
    mistyped digit is caught at the desk rather than splitting one person in two.
    """
    if not isinstance(text, str):
        raise InvalidInput("id_number must be text")
    # A file saved by Notepad starts with a byte-order mark, and text pasted from a web page or a chat can
    # carry zero-width marks: neither is part of the number (found in review).
    value = typed_plainly(text).strip().upper()
    if not _ID_SHAPE.match(value):
        raise InvalidInput("an ID number has 18 characters: 17 digits and a digit or X")
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        raise InvalidInput("the ID number does not carry a valid birth date") from None
    if born.year < 1900 or born > dt.date.today():
        raise InvalidInput("the ID number does not carry a plausible birth date")
    if id_check_char(value[:17]) != value[17]:
        raise InvalidInput("the ID number's check character is wrong: is a digit mistyped?")
    return value


def typed_plainly(text: str) -> str:
    """``text`` as if typed in half-width and pasted clean: a Chinese input method in full-width mode
    types １３８ and Ｘ (NFKC makes them 138 and X; other scripts' digits stay, and the ASCII shapes
    refuse them), and a Notepad file or a web page adds invisible marks."""
    return unicodedata.normalize("NFKC", text.translate(_INVISIBLE))


#: A mainland mobile number, and the same behind China's country code (as +86, 0086 or 86).
_MOBILE = "1[3-9][0-9]{9}"
_COUNTRY_CODES = ("+86", "0086", "86")
_MOBILE_ABROAD = re.compile(f"^(?:{'|'.join(map(re.escape, _COUNTRY_CODES))})({_MOBILE})$")


def normalize_phone(text: str) -> str:
    """Digits (and a leading +) of a phone number: spaces and dashes dropped, typed in any width; a
    mainland mobile number without its country code (+86 138… is 138…: one number, one pseudonym)."""
    if not isinstance(text, str):
        raise InvalidInput("phone must be text")
    value = re.sub(r"[\s\-()]", "", typed_plainly(text))
    if not _PHONE_SHAPE.match(value):
        raise InvalidInput("a phone number has 5 to 20 digits, e.g. 13805751234 or 0575-85123456")
    mobile = _MOBILE_ABROAD.match(value)
    return mobile.group(1) if mobile else value


def phone_spellings(phone: str) -> tuple[str, ...]:
    """The ways ``phone`` (normalized) was kept before a mainland mobile lost its country code: a search
    finds a volunteer registered then as +86 138… by 138…, and the other way round."""
    if re.fullmatch(_MOBILE, phone):
        return (phone, *(code + phone for code in _COUNTRY_CODES))
    return (phone,)


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


class VolunteerKey:
    """The district secret, with its sub-keys; ``key_id`` is a public fingerprint."""

    def __init__(self, secret: bytes, scope: str):
        if len(secret) != SECRET_BYTES:
            raise ValueError("a volunteer key is 32 bytes")
        self.secret = secret
        self.scope = scope  # the scope of the node that created it
        self.key_id = "vk-" + hashlib.sha256(b"hemei volunteer key id\n" + secret).hexdigest()[:16]
        self._mac = _hkdf(secret, b"hemei volunteer pseudonym v1")
        self._aead = AESGCM(_hkdf(secret, b"hemei volunteer field encryption v1"))

    def pseudonym(self, kind: str, value: str) -> str:
        """A stable keyed pseudonym of a normalised value (``kind`` separates ID numbers from phones)."""
        digest = hmac.new(self._mac, f"{kind}\n{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind[:2]}-{digest[:32]}"

    def encrypt(self, value: str, table: str, pk: str, column: str) -> str:
        """``key_id:base64(nonce‖ciphertext)``; the AAD binds it to one table, row and column."""
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, value.encode(), _aad(table, pk, column))
        return f"{self.key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, table: str, pk: str, column: str) -> str:
        key_id, _, body = token.partition(":")
        if key_id != self.key_id:
            raise InvalidInput(f"{table}.{column} of {pk} was encrypted with key {key_id}, not {self.key_id}")
        try:
            raw = base64.b64decode(body, validate=True)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(table, pk, column)).decode()
        except (InvalidTag, ValueError):
            raise InvalidInput(f"{table}.{column} of {pk} does not decrypt: altered or moved") from None


def _aad(table: str, pk: str, column: str) -> bytes:
    return f"hemei\n{table}\n{pk}\n{column}".encode()


# ---------------------------------------------------------------------------
# Sealing the secret to a child's X25519 key
# ---------------------------------------------------------------------------

def new_box_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def box_public(private: X25519PrivateKey) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def box_private_bytes(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())


def _box_key(shared: bytes, context: str) -> AESGCM:
    return AESGCM(_hkdf(shared, b"hemei volunteer key grant v1\n" + context.encode()))


def seal(secret: bytes, recipient_public_b64: str, context: str) -> str:
    """Encrypt ``secret`` so that only the holder of the X25519 key can open it."""
    ephemeral = X25519PrivateKey.generate()
    try:
        recipient = X25519PublicKey.from_public_bytes(base64.b64decode(recipient_public_b64, validate=True))
        shared = ephemeral.exchange(recipient)  # refuses a low-order point (all zeros, say): no secret shared
    except ValueError:
        raise InvalidInput("the key request carries no valid X25519 public key") from None
    nonce = os.urandom(_NONCE)
    body = _box_key(shared, context).encrypt(nonce, secret, context.encode())
    eph = ephemeral.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(eph + nonce + body).decode()


def unseal(sealed_b64: str, private: X25519PrivateKey, context: str) -> bytes | None:
    """The secret, or None when this box was not sealed to ``private`` (or was altered)."""
    try:
        raw = base64.b64decode(sealed_b64, validate=True)
        eph = X25519PublicKey.from_public_bytes(raw[:32])
        return _box_key(private.exchange(eph), context).decrypt(raw[32:32 + _NONCE], raw[32 + _NONCE:],
                                                               context.encode())
    except (ValueError, InvalidTag):
        return None
