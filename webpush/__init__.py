"""Browser push: popups in SuiteCRM pages (no agi imports)."""
