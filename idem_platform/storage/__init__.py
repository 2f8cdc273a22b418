"""The write-audit-publish core: one module per sink, plus the shared audit, fingerprint and ledger."""
