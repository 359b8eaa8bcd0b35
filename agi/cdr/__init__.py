"""Backfill from Asterisk's CDR: the calls crmagi never heard of (it was down for all of them)."""
