"""Data-access layer for SuiteCRM/SugarCRM: lookups and call records (no agi imports)."""
