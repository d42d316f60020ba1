"""One spelling per mailbox: the canonical form of an email address.

`zoe@exämple.com` typed in NFC, in NFD or with its punycode domain
(`zoe@xn--exmple-cua.com`) is one mailbox, so it must be one contact and one record
in every CRM. canonical_email() is the rule for storing and matching; ascii_email()
is the same address with an ASCII (punycode) domain, for CRMs that take only that.
"""

import functools
import unicodedata

import idna

ACE_PREFIX = "xn--"


def canonical_email(value):
    """The canonical form of an email address: the form crmsync stores and matches on.

    - Unicode NFC, lower-cased; normalized again after lowering, because lower()
      can leave text that is not NFC ("İ" becomes "i" and a combining dot).
    - The domain after IDNA mapping (UTS 46, non-transitional), kept in Unicode
      (U-labels): staff read it and search it as it was typed, and the ASCII form a
      CRM may need is derived from it without loss (ascii_email), whereas the
      Unicode form cannot be recovered by eye from punycode.
    - A domain IDNA cannot map (it is not a valid domain name) is kept as NFC and
      lower case; whether the address is valid is the email validator's decision.

    A value that is not a string is returned unchanged.
    """
    if not isinstance(value, str):
        return value
    return _canonical(value)


# A worker asks for the same addresses twice per batch (the push, the record).
@functools.lru_cache(maxsize=4096)
def _canonical(value):
    if value.isascii():
        text = value.strip().lower()  # ASCII text is NFC already (most addresses: the short way)
    else:
        text = _nfc(_nfc(value.strip()).lower())
    local, at, domain = text.rpartition("@")
    if not at:
        return text
    return local + at + _unicode_domain(domain)


def ascii_email(value):
    """The canonical address with its domain in ASCII (A-labels, "xn--..."), for CRMs
    whose email validation is ASCII-only. The local part is left as it is: a
    non-ASCII local part has no ASCII form (and the email validator refuses it)."""
    email = canonical_email(value)
    if not isinstance(email, str):
        return email
    local, at, domain = email.rpartition("@")
    if not at or domain.isascii():
        return email
    try:
        return local + at + idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        return email


def may_be_non_canonical(email):
    """Whether a stored (stripped, lower-case) email can differ from its canonical
    form: only text outside ASCII or a punycode label can."""
    return not email.isascii() or ACE_PREFIX in email


def _unicode_domain(domain):
    if domain.isascii() and ACE_PREFIX not in domain:
        # UTS 46 maps an ASCII domain to itself lower-cased: nothing to do.
        return domain
    try:
        return idna.decode(idna.encode(domain, uts46=True))
    except (idna.IDNAError, UnicodeError):
        return domain


def _nfc(text):
    return unicodedata.normalize("NFC", text)
