"""Cleaning: PII scrubbing (what must and must not be replaced), de-duplication, short/empty responses."""

from __future__ import annotations

import pytest

from harness.config import CleaningConfig
from harness.data import Example
from harness.data.clean import clean_examples, normalize_text, scrub_pii


def ex(prompt: str, response: str, rid: str = "0", source: str = "s.jsonl") -> Example:
    return Example(
        messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
        source=source,
        record_id=rid,
    )


# ---------------------------------------------------------------------------------------------------- PII

SCRUBBED = [
    # (text, expected, kind)
    ("Call me at +1 (555) 123-4567 tomorrow.", "Call me at [PHONE] tomorrow.", "phone"),
    ("My number is 555.123.4567.", "My number is [PHONE].", "phone"),
    ("Reach the ward on 020 7946 0958 any time", "Reach the ward on [PHONE] any time", "phone"),
    ("From abroad dial +44 20 7946 0958.", "From abroad dial [PHONE].", "phone"),
    ("Paris office +33 1 23 45 67 89", "Paris office [PHONE]", "phone"),
    ("toll free 1-800-555-0199, weekdays", "toll free [PHONE], weekdays", "phone"),
    ("(555) 010-4477 is my cell", "[PHONE] is my cell", "phone"),
    ("555-010-4477", "[PHONE]", "phone"),
    ("phone: 5550104477", "phone: [PHONE]", "phone"),
    ("please call 555-0123 after 5", "please call [PHONE] after 5", "phone"),
    ("text me at +15550104477", "text me at [PHONE]", "phone"),
    ("write to jane.roe+clinic@example.co.uk today", "write to [EMAIL] today", "email"),
    ("Contact: A.B@hospital-mail.org.", "Contact: [EMAIL].", "email"),
    ("my photos are on facebook.com/john.doe.1985", "my photos are on [URL]", "url"),
    ("see https://www.instagram.com/jroe_fit/ for pics", "see [URL] for pics", "url"),
    ("profile: https://portal.example.com/users/jroe/records.", "profile: [URL].", "url"),
    ("http://clinic.example.com/view?user=jroe&tab=2", "[URL]", "url"),
    ("https://www.linkedin.com/in/jane-roe-md", "[URL]", "url"),
    ("http://example.edu/~jroe/cv.html", "[URL]", "url"),
    ("DOB: 01/02/1980", "DOB: [DOB]", "dob"),
    ("D.O.B. 1980-02-01, male", "D.O.B. [DOB], male", "dob"),
    ("date of birth: March 3, 1975.", "date of birth: [DOB].", "dob"),
    ("I was born on 3 March 1975 in Leeds", "I was born on [DOB] in Leeds", "dob"),
    ("born on the 4th of July", "born on the [DOB]", "dob"),
    ("her birthday is 12 Dec", "her birthday is [DOB]", "dob"),
    ("MRN 1234567", "MRN [MRN]", "mrn"),
    ("medical record #: 00123456", "medical record #: [MRN]", "mrn"),
    ("Medical record number: AB-123456.", "Medical record number: [MRN].", "mrn"),
    ("patient ID 99887766 admitted", "patient ID [MRN] admitted", "mrn"),
    # issue 11: SSNs, bare numbers after "my number is", IP addresses, whole card numbers (Luhn-checked)
    ("SSN 123-45-6789 on file", "SSN [SSN] on file", "ssn"),
    ("his social security number is 123 45 6789.", "his social security number is [SSN].", "ssn"),
    ("my SSN: 123456789", "my SSN: [SSN]", "ssn"),
    ("my number is 5550104477", "my number is [PHONE]", "phone"),
    ("you can reach me at 5550104477 after work", "you can reach me at [PHONE] after work", "phone"),
    ("her phone number is 5550104477", "her phone number is [PHONE]", "phone"),
    ("paid with 4111 1111 1111 1111 yesterday", "paid with [CARD] yesterday", "card"),
    ("card 4111-1111-1111-1111.", "card [CARD].", "card"),
    ("amex 378282246310005", "amex [CARD]", "card"),
    ("visa 4012888888881881 exp 12/27", "visa [CARD] exp 12/27", "card"),
    ("logged in from 192.168.10.254 at night", "logged in from [IP] at night", "ip"),
    ("server 10.0.0.1:8080", "server [IP]", "ip"),
    ("from 2001:db8:85a3::8a2e:370:7334 again", "from [IP] again", "ip"),
    ("link-local fe80::1ff:fe23:4567:890a", "link-local [IP]", "ip"),
]


@pytest.mark.parametrize("text,expected,kind", SCRUBBED)
def test_pii_is_scrubbed(text, expected, kind):
    out, counts = scrub_pii(text)
    assert out == expected
    assert counts[kind] == 1 and sum(counts.values()) == 1


KEPT = [
    "Give 5 mg/kg twice daily.",
    "In 2019 he had a stroke; she was born in 1975.",
    "WBC 12.5 x 10^9/L, Hb 13.5 g/dL, platelets 150 000-450 000/uL",
    "BP 120/80 mmHg, HR 72/min, glucose 5.5 mmol/L, HbA1c 48 mmol/mol",
    "Seen on 12/03/2020 and again on 2020-03-12.",
    "95% CI 1.23-4.56, p = 0.003, n = 1,234,567",
    "ICD-10 E11.9; potassium 3.5-5.0 mEq/L; 1-2 tablets every 4-6 hours",
    "Data from 2018-2020 and the years 1990 2000 2010.",
    "dose 1000 mg, 2000 IU, 10 000 units, 250-500 mg every 8-12 h",
    "Read more at https://www.nih.gov/health-information/heart and www.example.org/members/.",
    "The facebook.com/help page and https://github.com are not people.",  # github.com alone has no user path
    "Room 1204, bed 3; call the nurse if pain is 7/10 or worse.",
    "A 45-year-old man with a 20-pack-year history, temperature 38.5 C.",
    "Dial 112 or 999 in an emergency.",
    # near misses of the SSN / card / IP / phone patterns
    "Invalid SSN-like numbers 000-12-3456, 666-12-3456 and 123-00-4567 are never issued.",
    "Batch 4111 1111 1111 1112 failed QC.",  # 16 digits, Luhn-invalid
    "Take 1-2 tablets at 08:30:00 and 20:30:00; ratio 1:2:3.",
    "Normal ranges 3.5-5.0 and 135-145; troponin 0.04 ng/mL; ICD-10 I21.4 and E11.65",
    "Use std::vector in C++; scores 12.5.3 and 1.2.3",
    "my number is 7 on the waiting list",
    "The years 1999 2000 2001 and 2019-2020 were studied.",
    "Dose 2.5 mg at 256.0 mL/h; lab code 300.01",
]


@pytest.mark.parametrize("text", KEPT)
def test_non_pii_is_kept(text):
    out, counts = scrub_pii(text)
    assert out == text
    assert sum(counts.values()) == 0


def test_several_kinds_in_one_text_are_counted():
    text = (
        "Pt DOB 02/03/1961, MRN: 7654321, phone (555) 010-2233, mail pt@example.com, "
        "blog https://example.com/people/pt-name. Dose 5 mg/kg."
    )
    out, counts = scrub_pii(text)
    assert out == ("Pt DOB [DOB], MRN: [MRN], phone [PHONE], mail [EMAIL], blog [URL]. Dose 5 mg/kg.")
    assert counts == {"url": 1, "email": 1, "mrn": 1, "dob": 1, "phone": 1, "ssn": 0, "card": 0, "ip": 0}


def test_scrubbing_in_clean_examples_counts_replacements_and_examples():
    exs = [ex("call 555-010-2233 please", "I will, or e-mail me at doc@example.org."), ex("fine?", "Yes, fine.")]
    kept, report = clean_examples(exs, CleaningConfig())
    assert kept[0].messages[0]["content"] == "call [PHONE] please"
    assert kept[0].response == "I will, or e-mail me at [EMAIL]."
    assert report.pii == {"url": 0, "email": 1, "mrn": 0, "dob": 0, "phone": 1, "ssn": 0, "card": 0, "ip": 0}
    assert report.pii_examples == 1
    assert kept[1] == exs[1]


def test_scrubbing_can_be_switched_off():
    exs = [ex("call 555-010-2233 please", "ok, noted.")]
    kept, report = clean_examples(exs, CleaningConfig(scrub_pii=False))
    assert kept[0].messages[0]["content"] == "call 555-010-2233 please"
    assert report.pii_examples == 0 and sum(report.pii.values()) == 0


# ---------------------------------------------------------------------------------------------------- de-dup


def test_normalize_text():
    assert normalize_text("  Hello,\tWORLD!!  How  are you? ") == "hello world how are you"


def test_exact_and_normalized_dedup_are_counted_separately():
    exs = [
        ex("What is a fever?", "A raised body temperature.", "0"),
        ex("What is a fever?", "A raised body temperature.", "1"),  # exact duplicate
        ex("what is a  fever", "a raised body\ntemperature", "2"),  # case, whitespace, punctuation
        ex("WHAT IS A FEVER?", "A RAISED BODY TEMPERATURE!", "3"),  # case and punctuation
        ex("What is a fever?", "A raised body temperature above 38 C.", "4"),  # different answer: kept
    ]
    kept, report = clean_examples(exs, CleaningConfig())
    assert [e.record_id for e in kept] == ["0", "4"]
    assert report.dedup_exact == 1 and report.dedup_normalized == 2


def test_dedup_switches():
    exs = [ex("Q?", "Answer one.", "0"), ex("Q?", "Answer one.", "1"), ex("q", "answer one", "2")]
    kept, report = clean_examples(exs, CleaningConfig(dedup_exact=True, dedup_normalized=False))
    assert [e.record_id for e in kept] == ["0", "2"] and report.dedup_exact == 1 and report.dedup_normalized == 0
    kept, report = clean_examples(exs, CleaningConfig(dedup_exact=False, dedup_normalized=True))
    assert [e.record_id for e in kept] == ["0"] and report.dedup_exact == 0 and report.dedup_normalized == 2
    kept, report = clean_examples(exs, CleaningConfig(dedup_exact=False, dedup_normalized=False))
    assert len(kept) == 3


def test_examples_differing_only_in_pii_become_duplicates():
    exs = [
        ex("my number is 555-010-1111", "Noted, thanks.", "0"),
        ex("my number is 555-010-2222", "Noted, thanks.", "1"),
    ]
    kept, report = clean_examples(exs, CleaningConfig())
    assert len(kept) == 1 and report.dedup_exact == 1


def test_dedup_respects_roles():
    a = Example(
        messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "yes"}], source="s", record_id="0"
    )
    b = Example(
        messages=[
            {"role": "system", "content": "x"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "yes"},
        ],
        source="s",
        record_id="1",
    )
    kept, _ = clean_examples([a, b], CleaningConfig())
    assert len(kept) == 2


# ---------------------------------------------------------------------------------------------------- short / empty


def test_empty_and_short_responses_and_empty_prompts():
    exs = [
        ex("Question one?", "", "0"),  # empty
        ex("Question two?", "   \n ", "1"),  # whitespace only
        ex("Question three?", "Ok", "2"),  # 2 chars
        ex("", "A full answer.", "3"),  # empty prompt
        ex("Question five?", "Yes, it is.", "4"),
    ]
    kept, report = clean_examples(exs, CleaningConfig(min_response_chars=3))
    assert [e.record_id for e in kept] == ["4"]
    assert (report.empty_response, report.short_response, report.empty_prompt) == (2, 1, 1)
    assert report.input == 5
    assert report.by_source == {"s.jsonl": {"input": 5, "kept": 0}}  # kept is filled in after tokenization


def test_min_response_chars_zero_keeps_short_but_not_empty():
    exs = [ex("q1", "", "0"), ex("q2", "y", "1")]
    kept, report = clean_examples(exs, CleaningConfig(min_response_chars=0))
    assert [e.record_id for e in kept] == ["1"] and report.empty_response == 1 and report.short_response == 0


def test_system_message_alone_is_an_empty_prompt():
    only_system = Example(
        messages=[
            {"role": "system", "content": "be kind"},
            {"role": "user", "content": " "},
            {"role": "assistant", "content": "Hello there."},
        ],
        source="s",
        record_id="0",
    )
    kept, report = clean_examples([only_system], CleaningConfig())
    assert kept == [] and report.empty_prompt == 1


def test_order_is_preserved_and_input_not_mutated():
    exs = [ex(f"question {i}?", f"answer number {i}, call 555-010-000{i}", str(i)) for i in range(5)]
    before = [e.to_dict() for e in exs]
    kept, _ = clean_examples(exs, CleaningConfig())
    assert [e.record_id for e in kept] == ["0", "1", "2", "3", "4"]
    assert [e.to_dict() for e in exs] == before


def test_new_kinds_are_counted_separately_and_cards_keep_no_digits():
    text = "SSN 123-45-6789, card 4111 1111 1111 1111, ip 192.168.1.20, my number is 5550104477, mail a@b.org"
    out, counts = scrub_pii(text)
    assert out == "SSN [SSN], card [CARD], ip [IP], my number is [PHONE], mail [EMAIL]"
    assert counts == {"url": 0, "email": 1, "mrn": 0, "dob": 0, "phone": 1, "ssn": 1, "card": 1, "ip": 1}
    assert "1111" not in out
