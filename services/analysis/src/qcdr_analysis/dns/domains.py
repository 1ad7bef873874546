"""Registered-domain extraction with tldextract's bundled suffix list (never fetched)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import tldextract

# The PSL's private section lists dynamic-DNS and hosting suffixes (ddns.net, duckdns.org,
# github.io): the label a user registers there is the one a DGA chooses, so it is included.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


@dataclass(frozen=True, slots=True)
class Name:
    """A query name split at its public suffix."""

    fqdn: str
    subdomain: str
    label: str  # the registrable label: what the owner (or a DGA) picked
    suffix: str
    private_suffix: bool  # under a dynamic-DNS / hosting suffix from the PSL's private section
    known_suffix: bool = True

    @property
    def idn(self) -> bool:
        """An internationalised (punycode) label: not Latin text, so not judged lexically."""
        return self.label.startswith("xn--")

    @property
    def registered(self) -> str:
        return f"{self.label}.{self.suffix}" if self.suffix else self.label


def normalise(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


# Free dynamic-DNS services whose shared parent domains the PSL does not list (it has No-IP's,
# DuckDNS and Dyn's): FreeDNS (afraid.org) shared domains, ChangeIP's free domains and a few
# others that public threat-intel lists of dynamic DNS carry. A name under one of them is chosen
# by whoever registered the host, so it is judged like a label under a PSL private suffix.
_SHARED_DYNAMIC_DNS = (
    "mooo.com us.to uk.to yi.org chickenkiller.com crabdance.com jumpingcrab.com ignorelist.com "
    "strangled.net twilightparadox.com ftp.sh dynserv.com changeip.com changeip.net changeip.org "
    "2waky.com x24hr.com zzux.com dns04.com dns05.com mefound.com wikaba.com ns01.info ns02.info "
    "dtdns.net dnsdynamic.org dynu.com"
)
SHARED_DYNAMIC_DNS = frozenset(_SHARED_DYNAMIC_DNS.split(" "))


@lru_cache(maxsize=65536)
def split(domain: str) -> Name:
    fqdn = normalise(domain)
    r = _EXTRACT(fqdn)
    if not r.suffix and "." in fqdn:
        # Not an ICANN or PSL suffix (an alternative root such as EmerDNS ".bazar"): judge the
        # label in front of the last one, and say the suffix is unknown.
        rest, _, last = fqdn.rpartition(".")
        sub, _, label = rest.rpartition(".")
        return Name(fqdn, sub, label, last, False, known_suffix=False)
    if not r.domain and r.suffix:
        # A bare suffix ("co.uk"): the last label is all there is to judge.
        head, _, rest = r.suffix.partition(".")
        return Name(fqdn, "", head, rest, r.is_private)
    if r.subdomain and f"{r.domain}.{r.suffix}" in SHARED_DYNAMIC_DNS:
        sub, _, label = r.subdomain.rpartition(".")
        return Name(fqdn, sub, label, f"{r.domain}.{r.suffix}", True)
    return Name(fqdn, r.subdomain, r.domain, r.suffix, r.is_private)


def registered(domain: str) -> str:
    """The registered domain (eTLD+1) of ``domain``, offline."""
    return split(domain).registered
