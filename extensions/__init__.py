"""Dialplan templates rendered by `crmagi dialplan`."""
