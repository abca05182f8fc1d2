"""Provider factories: one module per provider."""
