"""Who decides: per-approver keys and identity providers (docs/security.md, "Proven decisions").

`keys` manages local Ed25519 keys and the file of public keys workers trust; the checking of a
proof itself is pure and lives in ensemble.logic.proofs."""
