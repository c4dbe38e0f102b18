"""Key escrow under M-of-N control (docs/escrow.md)."""
