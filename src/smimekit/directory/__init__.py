"""Certificate distribution: find the certificates of an address wherever they are (our
store, signed mail we received, LDAP, SMIMEA in DNS), publish ours, push client settings.

Modules: ``sources`` (the protocol every source implements), ``resolver`` (lookup: every
source, validation, ranking, cache), ``ldap`` (publish, lookup, LDIF), ``harvest`` (from
signed mail), ``dns`` (SMIMEA zone and DNSSEC-validated lookup), ``clients`` (settings for
Apple Mail, Thunderbird and Outlook), ``sync`` (the CA reconciled with an identity source).
See docs/directory.md.
"""
