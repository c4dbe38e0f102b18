"""Archive tools: scan, decrypt and re-encrypt mbox, Maildir and .eml folders."""
