"""The database schema, as SQLAlchemy Core tables (no ORM).

One schema for SQLite and PostgreSQL. Times are stored in UTC. The audit log keeps its
timestamp as ISO 8601 text so that the bytes hashed into the chain survive the round trip
through either database unchanged.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_VERSION = 6
"""Bumped by every change to the tables below; a store refuses a version it does not know.

Version 2 added ``issued`` (our CA's issuance records). Version 3 added the live markers of
``issued`` (``sign_slot``, ``encrypt_slot``, each unique) and the unique index on
(issuer, CRL number) of ``crl_publications``. Version 4 added ``harvested_certificates``
(certificates kept from signed mail that validated, ``directory harvest``). Version 5 added
``identities`` (the people ``ca sync`` manages, by the identity source's stable id). Version 6
added the gateway's tables: ``gateway_keys`` (the keys the gateway holds for users) and
``gateway_deliveries`` (the delivery journal). Versions 1 to 5 are upgraded in place by the
first write transaction (:mod:`smimekit.store.upgrade`)."""

metadata = MetaData()

schema_meta = Table(
    "schema_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

certificates = Table(
    "certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("der", LargeBinary, nullable=False),
    Column("subject", Text, nullable=False),
    # JSON list of lower-cased addresses (SAN rfc822Name, then subject emailAddress).
    Column("emails", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    # Hex: serial numbers run to 20 octets, more than any integer column holds.
    Column("serial", String(64), nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    # Comma-separated RFC 5280 names (digitalSignature,keyEncipherment,...); NULL: no extension.
    Column("key_usage", Text),
    Column("fingerprint", String(64), nullable=False, unique=True),  # SHA-256, lower-case hex
    Column("source", String(64), nullable=False),  # issued, imported, harvested, ldap, ...
    Column("added_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", Text),
    Column("department", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

private_keys = Table(
    "private_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("encrypted_pkcs8", LargeBinary, nullable=False),  # never stored in the clear
    Column("owner", String(320), nullable=False),
    Column("purpose", String(16), nullable=False),
    Column("certificate_fingerprint", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
    CheckConstraint("purpose IN ('sign', 'encrypt')", name="ck_private_keys_purpose"),
)

# What our own CA issued: one row per certificate, with its lifecycle state. Certificates
# issued elsewhere live in ``certificates`` only.
issued = Table(
    "issued",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), ForeignKey("certificates.fingerprint"), nullable=False,
           unique=True),
    Column("serial", String(64), nullable=False),
    Column("issuer_fingerprint", String(64), nullable=False),
    Column("email", String(320), nullable=False, index=True),
    Column("purpose", String(16), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("key_origin", String(16), nullable=False),  # csr | generated
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False, index=True),
    # Set when a renewal replaced this certificate (the successor's fingerprint).
    Column("renewed_by", String(64)),
    Column("notified_at", DateTime(timezone=True)),
    # The one-live-certificate rule as a constraint: while a certificate is live (neither
    # revoked, renewed nor replaced, and not expired when the next one is issued) its
    # address is in the slot of each purpose it serves (``both``: the two), else NULL. Each
    # slot column is unique and NULLs never collide, in SQLite as in PostgreSQL: a second
    # live certificate for the same address and purpose fails inside the issuing
    # transaction, whatever another process read before.
    Column("sign_slot", String(320)),
    Column("encrypt_slot", String(320)),
    CheckConstraint("purpose IN ('sign', 'encrypt', 'both')", name="ck_issued_purpose"),
    CheckConstraint("key_origin IN ('csr', 'generated')", name="ck_issued_key_origin"),
    UniqueConstraint("serial", "issuer_fingerprint", name="uq_issued_serial_issuer"),
)

revocations = Table(
    "revocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("serial", String(64), nullable=False),
    Column("issuer_fingerprint", String(64), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("reason", String(32)),
    UniqueConstraint("serial", "issuer_fingerprint", name="uq_revocations_serial_issuer"),
)

crl_publications = Table(
    "crl_publications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("issuer_fingerprint", String(64), nullable=False),
    Column("crl_number", String(64), nullable=False),  # decimal text: up to 20 octets
    Column("this_update", DateTime(timezone=True), nullable=False),
    Column("next_update", DateTime(timezone=True)),
    Column("der", LargeBinary, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),
)

# Indexes added by version 3 (indexes, not table constraints, so that an upgrade can add them
# to existing tables on SQLite too).
SIGN_SLOT_INDEX = Index("uq_issued_sign_slot", issued.c.sign_slot, unique=True)
ENCRYPT_SLOT_INDEX = Index("uq_issued_encrypt_slot", issued.c.encrypt_slot, unique=True)
CRL_NUMBER_INDEX = Index("uq_crl_publications_issuer_number",
                         crl_publications.c.issuer_fingerprint, crl_publications.c.crl_number,
                         unique=True)

# Certificates kept from signed mail whose signature validated (version 4; directory/harvest.py).
# One row per (address, certificate): a newer certificate for the address is another row, and
# the resolver ranks them. No message content is kept, only where it was seen.
harvested_certificates = Table(
    "harvested_certificates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("address", String(320), nullable=False, index=True),  # mailbox.comparable() form
    Column("der", LargeBinary, nullable=False),
    Column("fingerprint", String(64), nullable=False),  # SHA-256 of der, lower-case hex
    # The intermediates that came with it, DER certificates one after the other (empty: none).
    Column("chain_der", LargeBinary, nullable=False),
    Column("role", String(16), nullable=False),  # signer | encryption
    # Named by the sender's SMIMEEncryptionKeyPreference (RFC 8551 2.5.3) in any message.
    Column("preferred", Boolean, nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    # The message of last_seen: "<archive path> <location> <Message-ID>", never its content.
    Column("message_ref", Text, nullable=False),
    CheckConstraint("role IN ('signer', 'encryption')", name="ck_harvested_role"),
    UniqueConstraint("address", "fingerprint", name="uq_harvested_address_fingerprint"),
)

# The people ``ca sync`` manages (version 5; ca/sync.py): the identity source's stable id (uid,
# employee number) and the address and name the CA certified for them, so that a new address
# or name in the source is recognised as the same person. A leaver's row stays, with left_at.
identities = Table(
    "identities",
    metadata,
    Column("external_id", String(255), primary_key=True),
    Column("email", String(320), nullable=False, index=True),  # mailbox.comparable() form
    Column("name", Text),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("left_at", DateTime(timezone=True)),
)

# The keys the mail gateway holds (gateway/keys.py): each private key sealed (AES-256-GCM) under
# the gateway's master key, which is itself sealed under the key passphrase in schema_meta
# (key "gateway_master_key"), or kept inside the PKCS#11 token (the row says where). Retired
# keys stay: the gateway decrypts with the whole history.
gateway_keys = Table(
    "gateway_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # lower-cased; "" for the organisation's signing key (purpose "organisation")
    Column("address", String(320), nullable=False),
    Column("purpose", String(16), nullable=False),  # sign | encrypt | both | organisation
    Column("certificate", LargeBinary, nullable=False),  # DER
    Column("chain", LargeBinary, nullable=False),  # PEM certificates, concatenated
    Column("fingerprint", String(64), nullable=False, unique=True),  # of the certificate
    # never the key in the clear: sealed, or pkcs11:{token, id} for a key inside the token
    Column("sealed", LargeBinary, nullable=False),
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
    CheckConstraint("purpose IN ('sign', 'encrypt', 'both', 'organisation')",
                    name="gateway_keys_purpose"),
    Index("gateway_keys_address", "address"),
)

# The gateway's delivery journal (version 6; gateway/journal.py): what the next hop has accepted
# of one message, so that Postfix's retry of a message the gateway answered 4xx to does not hand
# the same recipients the same message twice. One row per recipient copy; shared by every
# gateway node on one database. Never message content: only hashes and addresses.
gateway_deliveries = Table(
    "gateway_deliveries",
    metadata,
    # SHA-256 (hex) of the envelope (sender, recipients) and the message as received.
    Column("message_key", String(64), nullable=False),
    # "<copy>:<recipient>": the copy-th Delivery of the outcome that names the recipient
    # (0 for the message itself; a second copy, e.g. a password message, is 1).
    Column("delivery_key", String(340), nullable=False),
    Column("node", String(255), nullable=False),  # host name and process id of the gateway
    Column("reply", String(255), nullable=False),  # the next hop's reply, first line
    Column("delivered_at", DateTime(timezone=True), nullable=False, index=True),
    UniqueConstraint("message_key", "delivery_key", name="uq_gateway_delivery"),
)

# Placeholder for the escrow issue: the columns it will at least need.
escrow_records = Table(
    "escrow_records",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key_id", Integer, ForeignKey("private_keys.id")),
    Column("owner", String(320), nullable=False),
    Column("threshold", Integer),
    Column("shares", Integer),
    Column("payload", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Append-only and hash-chained: hash = SHA-256(prev_hash || canonical JSON of the row).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", String(40), nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject", Text, nullable=False),
    Column("details", Text, nullable=False),  # canonical JSON
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)


audit_mac = Table(
    "audit_mac",
    metadata,
    # No foreign key: a MAC left behind by a removed row is evidence, not an error to block.
    Column("audit_id", Integer, primary_key=True, autoincrement=False),
    Column("key_id", String(16), nullable=False),
    Column("mac", String(64), nullable=False),
)
"""The audit rows' MACs under the audit key (store/audit.py). A table of its own, added to
existing stores without a version change: its absence reads as "no row anchored"."""
