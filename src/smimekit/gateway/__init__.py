"""The S/MIME gateway: an after-queue content filter for Postfix (docs/gateway.md).

Postfix hands every message to ``smimekit gateway serve`` over SMTP; the gateway signs,
encrypts, decrypts and verifies by policy and hands the result to Postfix's re-injection
port. It answers 250 only after the next hop has accepted everything it made of the message.
"""
