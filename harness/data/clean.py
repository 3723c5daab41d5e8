"""Cleaning steps on loaded examples, each switchable and counted.

Order: drop empty prompts / empty or short responses -> scrub PII -> exact de-dup -> normalised de-dup.
Scrubbing comes before de-dup so that two records differing only in, say, a phone number count as duplicates.
The length filter needs the tokenizer and lives with tokenization (`harness.data.prepare`).

PII scrubbing replaces what it finds with a placeholder and counts it by kind. It aims at identifiers in free
text (e-mail addresses, phone numbers, URLs that point at a person, dates of birth, medical record numbers);
it keeps dosages, lab values, years and ordinary dates that are not said to be a birth date. US social-security
numbers, payment card numbers (13-19 digits passing the Luhn check, replaced whole: no last four digits kept) and
IPv4 / IPv6 addresses are scrubbed too; cards and SSNs before phone numbers, so that no part is left behind.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from harness.data.examples import Example

PLACEHOLDERS = {
    "url": "[URL]",
    "email": "[EMAIL]",
    "mrn": "[MRN]",
    "dob": "[DOB]",
    "phone": "[PHONE]",
    "ssn": "[SSN]",
    "card": "[CARD]",
    "ip": "[IP]",
}

# ---------------------------------------------------------------------------------------------------- patterns

EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

# Any URL; whether it points at a person is decided by PERSONAL_URL_RE on the match.
URL_RE = re.compile(
    r"(?:\bhttps?://|\bwww\.)[^\s<>\"')\]]+"  # with a scheme or www.
    r"|\b(?:facebook|fb|instagram|twitter|x|linkedin|tiktok|youtube|github|reddit|pinterest|snapchat)\.com/"
    r"[^\s<>\"')\]]+",  # a social site without a scheme
    re.IGNORECASE,
)
PERSONAL_URL_RE = re.compile(
    r"(?:facebook|fb|instagram|twitter|x|tiktok|pinterest|snapchat)\.com/(?!(?:help|policies|about|legal)\b)[^/?#\s]+"
    r"|linkedin\.com/in/|youtube\.com/(?:@|user/|c/|channel/)|github\.com/[^/?#\s]+|reddit\.com/u(?:ser)?/"
    r"|/(?:users?|u|profiles?|people|members?)/[\w.%+-]*[A-Za-z0-9]|/~[\w.-]+"  # a segment naming someone
    r"|[?&](?:user(?:name|_?id)?|uid|email|e-mail|patient(?:_?id)?|mrn|name|first_?name|last_?name|dob|phone)=",
    re.IGNORECASE,
)

_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:[0-3]?\d)(?:st|nd|rd|th)?"
_DATE = (
    r"(?:\d{1,4}[/.-]\d{1,2}[/.-]\d{1,4}"  # 01/02/1980, 1980-02-01, 1.2.80
    rf"|{_DAY}\s+(?:of\s+)?{_MONTH},?(?:\s+\d{{4}})?"  # 3 March 1975, 3rd of March
    rf"|{_MONTH}\s+{_DAY}(?:,?\s+\d{{4}})?"  # March 3, 1975
    rf"|{_MONTH},?\s+\d{{4}})"  # March 1975
)
# The cue is kept ("DOB: [DOB]"); only the date is replaced. A year on its own is not scrubbed (HIPAA safe harbor
# allows years) and keeps sentences such as "born in 1975" or "in 2019" intact.
DOB_RE = re.compile(
    rf"(\b(?:d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|birthday|born(?:\s+on)?)"
    rf"\s*(?:is|was)?\s*[:#-]?\s*(?:the\s+)?)({_DATE})",
    re.IGNORECASE,
)
MRN_RE = re.compile(
    r"(\b(?:mrn|medical\s+record|med\.?\s+rec\.?|patient\s+(?:id|number|no\.?)|chart\s+(?:number|no\.?)"
    r"|hospital\s+(?:number|no\.?)|record\s+(?:number|no\.?))"
    r"\s*(?:number|no\.?|num\.?)?\s*(?:is|was)?\s*[:#]?\s*[:#]?\s*)"
    r"([A-Z]{0,3}-?\d[\d-]{3,}\d)\b",
    re.IGNORECASE,
)
_NOT_AFTER = r"(?![.-]?\d)"
PHONE_RE = re.compile(
    r"(?<![\w+/.-])(?:"
    # +CC then groups: +33 1 23 45 67 89, +44 20 7946 0958, +15551234567
    r"\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){3,6}"
    # optional country code, area code, then 3-4 digits and 4 digits: (555) 123-4567, 555.123.4567,
    # 020 7946 0958, 1-800-555-1234
    r"|(?:\d{1,3}[\s.-])?(?:\(\d{2,5}\)\s?|\d{2,5}[\s.-])\d{3,4}[\s.-]\d{4}"
    rf"){_NOT_AFTER}"
)
# Digits with a spoken cue: "call 555-1234", "phone: 5551234567", "my number is 5551234567" (7+ digits).
CUED_PHONE_RE = re.compile(
    r"(\b(?:phone|tel(?:ephone)?|mobile|cell(?:phone)?|fax|whats\s?app|call(?:\s+me)?(?:\s+(?:at|on))?"
    r"|text(?:\s+me)?(?:\s+(?:at|on))?|(?:reach|contact)\s+me(?:\s+(?:at|on))?"
    r"|(?:my|his|her|their|our|your)\s+(?:phone\s+|cell\s+|mobile\s+|contact\s+)?number)"
    r"\b\.?\s*(?:number|no\.?|#)?\s*(?:is)?\s*[:#]?\s*)"
    rf"(\+?\(?\d[\d\s().-]{{5,}}\d){_NOT_AFTER}",
    re.IGNORECASE,
)


# US social-security numbers: 3-2-4 digits with dashes or spaces (never area 000 / 666 / 9xx, group 00, serial
# 0000), or 9 bare digits after a cue ("SSN", "social security number").
SSN_RE = re.compile(r"(?<![\w./-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\w/-]|\.\d)")
CUED_SSN_RE = re.compile(
    r"(\b(?:ssn|soc(?:ial)?\.?\s+sec(?:urity)?\.?(?:\s+(?:number|no\.?|#))?)\s*(?:is)?\s*[:#]?\s*)"
    r"(\d{9})(?![\w-]|\.\d)",
    re.IGNORECASE,
)
# Payment cards: 13-19 digits, alone or in groups split by single spaces / dashes; kept only if Luhn-valid.
CARD_RE = re.compile(r"(?<![\w./+-])\d(?:[ -]?\d){12,18}(?![\w/]|[.-]\d)")
# IPv4: four octets 0-255; IPv6: hex groups with colons (validated by the ipaddress module).
IPV4_RE = re.compile(
    r"(?<![\w.:-])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    r"(?::\d{1,5})?(?![\w-]|\.\d)"
)
IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits)


def _is_ipv6(s: str) -> bool:
    import ipaddress

    if s.count(":") < 2 or not any(c.isdigit() for c in s) or re.fullmatch(r"[\d:]+", s) and "::" not in s:
        return False  # "12:30:45" is a time
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


_YEAR_RUN = re.compile(r"(?:(?:19|20)\d\d\s+){2,}(?:19|20)\d\d")  # "1990 2000 2010" has a phone's shape


def _looks_like_phone(s: str) -> bool:
    return _digits(s) >= 7 and not _YEAR_RUN.fullmatch(s)


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """`text` with identifiers replaced by placeholders, and how many of each kind were replaced."""
    counts = {kind: 0 for kind in PLACEHOLDERS}

    def url(m: re.Match[str]) -> str:
        whole_match = m.group(0)
        link = whole_match.rstrip(".,;:!?")  # sentence punctuation after a URL stays in the text
        if PERSONAL_URL_RE.search(link) or EMAIL_RE.search(link):
            counts["url"] += 1
            return PLACEHOLDERS["url"] + whole_match[len(link) :]
        return whole_match

    def whole(kind: str):
        def sub(m: re.Match[str]) -> str:
            if kind == "phone" and not _looks_like_phone(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return sub

    def cued(kind: str):
        def sub(m: re.Match[str]) -> str:
            if kind == "phone" and not _looks_like_phone(m.group(2)):
                return m.group(0)
            counts[kind] += 1
            return m.group(1) + PLACEHOLDERS[kind]

        return sub

    def checked(kind: str, ok: Any):
        def sub(m: re.Match[str]) -> str:
            if not ok(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return sub

    text = URL_RE.sub(url, text)  # first: URLs may contain e-mail addresses and digits
    text = EMAIL_RE.sub(whole("email"), text)
    text = IPV6_RE.sub(checked("ip", _is_ipv6), text)
    text = IPV4_RE.sub(whole("ip"), text)
    text = MRN_RE.sub(cued("mrn"), text)
    text = DOB_RE.sub(cued("dob"), text)
    shielded: list[str] = []  # card-shaped numbers that are not cards (Luhn fails): no phone is cut out of them

    def card(m: re.Match[str]) -> str:
        if _is_card(m.group(0)):
            counts["card"] += 1
            return PLACEHOLDERS["card"]
        shielded.append(m.group(0))
        return f"\ue000{len(shielded) - 1}\ue001"

    text = CARD_RE.sub(card, text)  # before phones: a card is not "[PHONE] 1111"
    text = CUED_SSN_RE.sub(cued("ssn"), text)
    text = SSN_RE.sub(whole("ssn"), text)
    text = CUED_PHONE_RE.sub(cued("phone"), text)
    text = PHONE_RE.sub(whole("phone"), text)
    if shielded:
        text = re.sub("\ue000(\\d+)\ue001", lambda m: shielded[int(m.group(1))], text)
    return text, counts


# ---------------------------------------------------------------------------------------------------- de-dup

_PUNCT_OR_SPACE = re.compile(r"\s+")


class _PunctuationToSpace(dict):
    """A `str.translate` table that maps every Unicode punctuation character (category P*) to a space, filled in
    as characters are met (one category lookup per distinct character, not per character of the text)."""

    def __missing__(self, code: int) -> int:
        value = 32 if unicodedata.category(chr(code)).startswith("P") else code
        self[code] = value
        return value


_PUNCTUATION_TO_SPACE = _PunctuationToSpace()


def normalize_text(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the key of normalised de-dup."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_PUNCTUATION_TO_SPACE)
    return _PUNCT_OR_SPACE.sub(" ", text).strip()


def _exact_key(ex: Example) -> str:
    return json.dumps([[m["role"], m["content"]] for m in ex.messages], ensure_ascii=False)


def _normalized_key(ex: Example) -> str:
    return json.dumps([[m["role"], normalize_text(m["content"])] for m in ex.messages], ensure_ascii=False)


# ---------------------------------------------------------------------------------------------------- steps


@dataclass
class CleaningReport:
    """What each step removed (or, for PII, replaced)."""

    input: int = 0
    empty_prompt: int = 0
    empty_response: int = 0
    short_response: int = 0
    dedup_exact: int = 0
    dedup_normalized: int = 0
    overlength: int = 0  # filled in after tokenization
    truncated: int = 0  # kept but cut to max_seq_length (drop_overlength = false)
    pii_examples: int = 0  # examples in which something was replaced
    pii: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in PLACEHOLDERS})
    kept: int = 0
    by_source: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> {"input", "kept"}

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


def clean_examples(examples: list[Example], cleaning) -> tuple[list[Example], CleaningReport]:
    """Apply the text cleaning steps of a `CleaningConfig`; the order of the kept examples is preserved."""
    report = CleaningReport(input=len(examples))
    for ex in examples:
        report.by_source.setdefault(ex.source, {"input": 0, "kept": 0})["input"] += 1

    kept: list[Example] = []
    for ex in examples:
        prompt_text = "".join(m["content"] for m in ex.messages[:-1] if m["role"] != "system").strip()
        response = ex.response.strip()
        if not prompt_text:
            report.empty_prompt += 1
        elif not response:
            report.empty_response += 1
        elif len(response) < cleaning.min_response_chars and not ex.raw:  # a task's label ("A") is never too short
            report.short_response += 1
        else:
            kept.append(ex)

    if cleaning.scrub_pii:
        scrubbed = []
        for ex in kept:
            changed = False
            messages = []
            for m in ex.messages:
                content, counts = scrub_pii(m["content"])
                for kind, n in counts.items():
                    report.pii[kind] += n
                changed |= content != m["content"]
                messages.append({"role": m["role"], "content": content})
            report.pii_examples += changed
            scrubbed.append(dataclasses.replace(ex, messages=messages))
        kept = scrubbed

    for enabled, key, counter in (
        (cleaning.dedup_exact, _exact_key, "dedup_exact"),
        (cleaning.dedup_normalized, _normalized_key, "dedup_normalized"),
    ):
        if not enabled:
            continue
        seen: set[str] = set()
        unique = []
        for ex in kept:
            k = key(ex)
            if k in seen:
                setattr(report, counter, getattr(report, counter) + 1)
            else:
                seen.add(k)
                unique.append(ex)
        kept = unique

    return kept, report
