"""PII detection and masking for Korean and English text (SPEC §1 "PII removal").

Each kind of PII is a pattern plus a validator, so that look-alikes survive: card numbers
must pass the Luhn check, resident registration numbers must start with a real date,
IP addresses must be public, bank accounts need a bank layout or a banking word nearby.
Matches become typed placeholders in square brackets (``[PHONE]``, ``[RRN]``, ...), which
are plain text and not hcx special tokens (those use ``<|...|>``). E-mail addresses keep
their domain (``[EMAIL]@naver.com``), as in the HyperCLOVA X report.

Private, loopback and reserved IP addresses (192.168.0.1, 127.0.0.1, 10.0.0.0/8) are kept:
they are configuration text that identifies nobody, and code and tutorials are full of them.
Business-wide numbers (1588-xxxx) are not personal and are kept.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

PII_TYPES = ("EMAIL", "RRN", "CARD", "LICENSE", "PASSPORT", "PHONE", "ACCOUNT", "IP")


@dataclass(frozen=True)
class PIIMatch:
    type: str
    start: int
    end: int
    value: str


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def _has_context(text: str, start: int, words: re.Pattern[str], window: int = 30) -> bool:
    return bool(words.search(text[max(0, start - window) : start]))


_BANK_WORDS = re.compile(
    r"계좌|통장|은행|입금|송금|이체|예금주|뱅크|국민|신한|우리|하나|농협|기업|새마을|우체국|카카오|토스|"
    r"account|bank|iban|routing|deposit|wire",
    re.IGNORECASE,
)
_RRN_WORDS = re.compile(r"주민|등록번호|RRN|resident", re.IGNORECASE)
_PASSPORT_WORDS = re.compile(r"여권|passport", re.IGNORECASE)
_LICENSE_WORDS = re.compile(r"면허|licen[cs]e|DL\s*(?:no|#)", re.IGNORECASE)
_VERSION_WORDS = re.compile(r"(?:version|ver\.?|버전|v|section|sec\.|chapter|§|build)\s*$", re.IGNORECASE)

# Korean particles attach directly to numbers (010-1234-5678로), so only ASCII word characters bound a match.
_EDGE_L = r"(?<![0-9A-Za-z_.+-])"
_EDGE_R = r"(?![0-9A-Za-z_-]|\.\d)"


def _valid_rrn(text: str, m: re.Match[str]) -> bool:
    digits = _digits(m.group())
    month, day, gender = int(digits[2:4]), int(digits[4:6]), int(digits[6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and 1 <= gender <= 8):
        return False
    if "-" in m.group() or "*" in m.group():
        return True
    weights = [2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5]
    check = (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11) % 10
    return check == int(digits[12]) or _has_context(text, m.start(), _RRN_WORDS)


_CARD_WORDS = re.compile(r"카드|결제|card|visa|master|amex|discover|payment", re.IGNORECASE)
_CARD_PREFIX = re.compile(r"3[47]|4|5[1-5]|2[2-7]|6[05]|9[0-9]")


def _valid_card(text: str, m: re.Match[str]) -> bool:
    """Luhn passes one random number in ten, so bare digit runs (ids, integers in code) need more."""
    value = m.group()
    digits = _digits(value)
    if not (13 <= len(digits) <= 19 and _luhn_ok(digits)):
        return False
    if value != digits:
        return True
    return (len(digits) == 16 and bool(_CARD_PREFIX.match(digits))) or _has_context(
        text, m.start(), _CARD_WORDS
    )


# Account layouts of the large Korean banks (groups of digits separated by hyphens).
_BANK_LAYOUTS = {
    (6, 2, 6),  # KB Kookmin
    (3, 3, 6),  # Shinhan
    (4, 3, 6),  # Woori
    (3, 6, 5),  # Hana
    (3, 4, 4, 2),  # NongHyup
    (3, 2, 6),  # NongHyup (old)
    (3, 6, 2, 3),  # IBK
    (4, 2, 7),  # Kakao Bank
    (3, 2, 4, 3),  # Citi
}


def _valid_account(text: str, m: re.Match[str]) -> bool:
    groups = tuple(len(g) for g in m.group().split("-"))
    if not 10 <= sum(groups) <= 16:
        return False
    return (len(groups) > 1 and groups in _BANK_LAYOUTS) or _has_context(text, m.start(), _BANK_WORDS)


def _valid_passport(text: str, m: re.Match[str]) -> bool:
    value = m.group()
    if re.fullmatch(r"[MSRODG]\d{8}|M\d{3}[A-Z]\d{4}", value):
        return True
    return _has_context(text, m.start(), _PASSPORT_WORDS)


def _valid_license(text: str, m: re.Match[str]) -> bool:
    value = m.group()
    if re.fullmatch(r"\d{2}-\d{2}-\d{6}-\d{2}", value):
        return 11 <= int(value[:2]) <= 28 or _has_context(text, m.start(), _LICENSE_WORDS)
    if value[0].isascii() and value[0].isalpha():
        return _has_context(text, m.start(), _LICENSE_WORDS)
    return True


def _valid_ip(text: str, m: re.Match[str]) -> bool:
    value = m.group()
    if ":" in value and sum(1 for group in value.split(":") if group) < 3:
        return False  # slices and ratios such as [::2] or 2::8 parse as IPv6
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if _VERSION_WORDS.search(text[max(0, m.start() - 10) : m.start()]):
        return False
    return address.is_global


def _valid_phone(text: str, m: re.Match[str]) -> bool:
    digits = _digits(m.group())
    return 9 <= len(digits) <= 13


_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_SEP = r"[-. ]?"
_KR_AREA = r"(?:2|3[1-3]|4[1-4]|5[1-5]|6[1-4]|70|80)"
_REGIONS = r"(?:서울|부산|경기|강원|충북|충남|전북|전남|경북|경남|제주|대구|인천|광주|대전|울산)"

Validator = Callable[[str, re.Match[str]], bool]

_PATTERNS: list[tuple[str, re.Pattern[str], Validator | None]] = [
    (
        "EMAIL",
        re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+(?=@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})"),
        None,
    ),
    (
        "RRN",
        re.compile(_EDGE_L + r"\d{6}(?:-[1-8](?:\d{6}|\*{6})|[1-8]\d{6})" + r"(?![0-9A-Za-z_*-])"),
        _valid_rrn,
    ),
    (
        "CARD",
        re.compile(
            _EDGE_L + r"(?:\d{4}[- ]\d{4}[- ]\d{4}[- ]\d{1,7}|\d{4}[- ]\d{6}[- ]\d{4,5}|\d{13,19})" + _EDGE_R
        ),
        _valid_card,
    ),
    (
        "LICENSE",
        re.compile(
            _EDGE_L
            + r"(?:\d{2}-\d{2}-\d{6}-\d{2}|"
            + _REGIONS
            + r"\s?\d{2}-\d{6}-\d{2}|[A-Z]\d{7,12})"
            + _EDGE_R
        ),
        _valid_license,
    ),
    ("PASSPORT", re.compile(r"(?<![\w-])(?:[A-Z]{1,2}\d{7,8}|M\d{3}[A-Z]\d{4})(?![\w-])"), _valid_passport),
    (
        "PHONE",
        re.compile(
            r"(?<![\w+-])(?:"
            r"\+82[-. ]?(?:\(0\))?(?:1[016789]|" + _KR_AREA + r")[-. )]?\d{3,4}[-. ]?\d{4}"
            r"|01[016789]" + _SEP + r"\d{3,4}" + _SEP + r"\d{4}"
            r"|\(0" + _KR_AREA + r"\)\s?\d{3,4}[-. ]\d{4}"
            r"|0" + _KR_AREA + r"[-. )]\d{3,4}[-. ]\d{4}"
            r"|(?:\+1[-. ])?\(?[2-9]\d{2}\)?[-. ]\d{3}[-. ]\d{4}"
            r")" + _EDGE_R
        ),
        _valid_phone,
    ),
    ("ACCOUNT", re.compile(_EDGE_L + r"(?:\d{2,6}(?:-\d{2,7}){2,3}|\d{10,14})" + _EDGE_R), _valid_account),
    (
        "IP",
        re.compile(r"(?<![0-9A-Za-z_.가-힣])" + _OCTET + r"(?:\." + _OCTET + r"){3}(?![0-9A-Za-z_]|\.\d)"),
        _valid_ip,
    ),
    (
        "IP",
        re.compile(r"(?<![0-9A-Za-z_:])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{3,39}(?![0-9A-Za-z_:])"),
        _valid_ip,
    ),
]


def find_pii(text: str) -> list[PIIMatch]:
    """All PII spans in ``text``, non-overlapping; earlier types in ``PII_TYPES`` win ties."""
    found: list[PIIMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern, validator in _PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue
            if validator is not None and not validator(text, m):
                continue
            found.append(PIIMatch(kind, m.start(), m.end(), m.group()))
            taken.append((m.start(), m.end()))
    return sorted(found, key=lambda p: p.start)


def placeholder(kind: str) -> str:
    return f"[{kind}]"


def scrub(text: str) -> tuple[str, Counter[str]]:
    """Replace every PII span with its typed placeholder; return the text and counts per type."""
    matches = find_pii(text)
    if not matches:
        return text, Counter()
    pieces, last = [], 0
    for match in matches:
        pieces.append(text[last : match.start])
        pieces.append(placeholder(match.type))
        last = match.end
    pieces.append(text[last:])
    return "".join(pieces), Counter(m.type for m in matches)


def score_pii(examples: list[dict]) -> dict[str, dict[str, float]]:
    """Precision and recall per PII type on labelled examples ``{"text", "pii": [[type, value], ...]}``.

    A detection is correct when type and value match; for e-mail the value is the local part
    of the labelled address (the domain is kept on purpose).
    """
    counts = {t: Counter() for t in PII_TYPES}
    for example in examples:
        gold = Counter(
            (kind, value.split("@")[0] if kind == "EMAIL" else value) for kind, value in example["pii"]
        )
        predicted = Counter((m.type, m.value) for m in find_pii(example["text"]))
        for (kind, _), n in (gold & predicted).items():
            counts[kind]["tp"] += n
        for (kind, _), n in (predicted - gold).items():
            counts[kind]["fp"] += n
        for (kind, _), n in (gold - predicted).items():
            counts[kind]["fn"] += n
    scores = {}
    for kind, c in counts.items():
        tp, fp, fn = c["tp"], c["fp"], c["fn"]
        scores[kind] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
        }
    return scores
