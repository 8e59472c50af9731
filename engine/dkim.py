"""DKIM signing (RFC 6376) with RSA-SHA256 and Ed25519-SHA256 (RFC 8463), relaxed/relaxed.

Keys are loaded once per provider factory; signing a message is one body hash plus one
signature per key over a few canonicalized headers.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from .config import DkimKeySettings, Settings
from .errors import ConfigError

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
MIN_RSA_BITS = 2048

#: Signed when present, in this order. RFC 8058 3 requires List-Unsubscribe and
#: List-Unsubscribe-Post to be covered; From is listed twice (over-signed) so that a second From
#: added in transit breaks the signature.
SIGNED_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Reply-To",
                  "List-Unsubscribe", "List-Unsubscribe-Post", "Feedback-ID")
OVERSIGNED = ("From",)

_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_TRAILING_WSP = re.compile(rb" \r\n")
_LINE_WIDTH = 76


@dataclass(frozen=True)
class DkimKey:
    """One private key and where its public half is published (`<selector>._domainkey.<domain>`)."""

    selector: str
    algorithm: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    def public_key_b64(self) -> str:
        """The p= value: the SubjectPublicKeyInfo for RSA, the raw 32-byte key for Ed25519 (RFC 8463 4)."""
        public = self.private_key.public_key()
        if self.algorithm == "ed25519-sha256":
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(raw).decode("ascii")

    def txt_value(self) -> str:
        """The TXT record's value (RFC 6376 3.6.1)."""
        k = "ed25519" if self.algorithm == "ed25519-sha256" else "rsa"
        return f"v=DKIM1; k={k}; p={self.public_key_b64()}"

    def signature(self, data: bytes) -> bytes:
        """The raw signature of the canonicalized header data."""
        if self.algorithm == "ed25519-sha256":
            # RFC 8463 3: PureEdDSA over the SHA-256 hash of the canonicalized data.
            return self.private_key.sign(hashlib.sha256(data).digest())
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def dns_name(selector: str, domain: str) -> str:
    """Where a key's TXT record is published."""
    return f"{selector}._domainkey.{domain}"


def zone_line(key: DkimKey, domain: str) -> str:
    """The record as a zone-file line; long values split into strings of at most 255 octets (RFC 1035 3.3)."""
    value = key.txt_value()
    chunks = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{dns_name(key.selector, domain)}. IN TXT ( {chunks} )"


class DkimSigner:
    """Adds one DKIM-Signature per key (dual signing: e.g. RSA for everyone, Ed25519 alongside)."""

    def __init__(self, *, domain: str, keys: list[DkimKey], clock: Callable[[], float] = time.time):
        if not keys:
            raise ValueError("a DKIM signer needs at least one key")
        self.domain = domain
        self.keys = list(keys)
        self.clock = clock

    def sign(self, data: bytes) -> bytes:
        """The message with DKIM-Signature headers prepended (CRLF line ends expected)."""
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            head, body = data.rstrip(b"\r\n"), b""
        fields = _fields(head)
        body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest()).decode("ascii")
        present = {name.lower() for name, _ in fields}
        names = [h for h in SIGNED_HEADERS if h.lower() in present] + [h for h in OVERSIGNED if h.lower() in present]
        canonical = b"".join(relaxed_header(raw) for raw in _select(fields, names))
        timestamp = int(self.clock())
        signatures = []
        for key in self.keys:
            value = _fold_tags([
                "v=1", f"a={key.algorithm}", "c=relaxed/relaxed", f"d={self.domain}", f"s={key.selector}",
                f"t={timestamp}", "h=" + ":".join(n.lower() for n in names), f"bh={body_hash}", "b=",
            ])
            unsigned = b"DKIM-Signature: " + value
            signed_data = canonical + relaxed_header(unsigned).rstrip(b"\r\n")
            b = base64.b64encode(key.signature(signed_data))
            signatures.append(unsigned + _fold_b64(b, len(value.rsplit(b"\r\n", 1)[-1]) + 1) + b"\r\n")
        return b"".join(signatures) + data


def relaxed_header(raw: bytes) -> bytes:
    """RFC 6376 3.4.2: lower-case name, unfolded, runs of white space as one space, trimmed."""
    name, _, value = raw.partition(b":")
    value = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value.rstrip(b"\r\n"))).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: trailing white space dropped, runs as one space, empty lines at the end removed."""
    body = _TRAILING_WSP.sub(b"\r\n", _WSP_RUN.sub(b" ", body)).rstrip(b" ").rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _fields(head: bytes) -> list[tuple[str, bytes]]:
    """The header fields as (name, raw text with its folding), in order."""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + b"\r\n" + line)
        elif line:
            fields.append((line.split(b":", 1)[0].strip().decode("ascii", "replace").lower(), line))
    return fields


def _select(fields: list[tuple[str, bytes]], names: list[str]) -> list[bytes]:
    """RFC 6376 5.4.2: each listed name takes the last not yet used instance, from the bottom up."""
    used: set[int] = set()
    chosen = []
    for name in names:
        for index in range(len(fields) - 1, -1, -1):
            if index not in used and fields[index][0] == name.lower():
                used.add(index)
                chosen.append(fields[index][1])
                break
    return chosen


def _fold_tags(tags: list[str]) -> bytes:
    """Tags joined by "; ", folded before a tag (or after a ':' in h=) to keep lines short."""
    pieces: list[tuple[bool, str]] = []
    for i, tag in enumerate(tags):
        text = tag + (";" if i < len(tags) - 1 else "")
        parts = re.split(r"(?<=:)", text) if tag.startswith("h=") else [text]
        pieces.extend((j == 0, part) for j, part in enumerate(parts) if part)
    out, width = "", len("DKIM-Signature: ")
    for k, (starts_tag, piece) in enumerate(pieces):
        sep = " " if starts_tag and k else ""
        if k and width + len(sep) + len(piece) > _LINE_WIDTH:
            out, width, sep = out + "\r\n\t", 1, ""
        out += sep + piece
        width += len(sep) + len(piece)
    return out.encode("ascii")


def _fold_b64(b: bytes, used: int) -> bytes:
    """The signature split over continuation lines (white space inside b= is ignored, RFC 6376 3.5)."""
    first = max(1, _LINE_WIDTH - used)
    return b"\r\n\t".join([b[:first]] + [b[i:i + _LINE_WIDTH - 1] for i in range(first, len(b), _LINE_WIDTH - 1)])


# -- keys and settings ----------------------------------------------------------------------------

def generate(algorithm: str, path: Path, *, bits: int = 2048) -> None:
    """Write a new private key as PKCS#8 PEM, readable by the owner only (mode 0600)."""
    if algorithm == "ed25519-sha256":
        key = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "rsa-sha256":
        if bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r} (choose {' or '.join(ALGORITHMS)})")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_key(spec: DkimKeySettings, path: Path) -> DkimKey:
    """Read and check one configured key; raises ValueError with a reason."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("file not found") from None
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ValueError("the key is encrypted; DKIM keys must be stored unencrypted (mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM private key") from None
    if spec.algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"algorithm is rsa-sha256 but the file holds an {_kind(key)} key")
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"the RSA key has {key.key_size} bits; DKIM keys need at least {MIN_RSA_BITS}")
    elif not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"algorithm is ed25519-sha256 but the file holds an {_kind(key)} key")
    return DkimKey(selector=spec.selector, algorithm=spec.algorithm, private_key=key)


def _kind(key) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RSA"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "Ed25519"
    return type(key).__name__.lstrip("_")


def signing_domain(settings: Settings) -> str:
    """`[dkim] domain`, or the sender's domain."""
    return settings.dkim.domain or settings.sender.from_email.rsplit("@", 1)[-1]


def load_keys(settings: Settings) -> list[DkimKey]:
    """Every configured key; a missing, unreadable, wrong-type or weak key is a ConfigError naming the file."""
    keys = []
    for index, spec in enumerate(settings.dkim.keys):
        path = settings.path(spec.private_key_file)
        try:
            keys.append(load_key(spec, path))
        except ValueError as exc:
            raise ConfigError.single(settings.source, _line(settings, ("dkim", "keys", index, "private_key_file")),
                                     f"DKIM key '{spec.selector}': {path}: {exc}") from None
    return keys


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """The signer for `[dkim]`, or None when no key is configured."""
    keys = load_keys(settings)
    return DkimSigner(domain=signing_domain(settings), keys=keys) if keys else None


def _line(settings: Settings, path: tuple) -> int | None:
    from .tomlpos import TomlDocument

    source = Path(settings.source)
    if not source.is_file():
        return None
    return TomlDocument.load(source, error=ConfigError).line_of(path)
