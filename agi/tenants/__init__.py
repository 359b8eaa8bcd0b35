"""Several companies on one crmagi (README.rst "Tenants").

registry.py reads the tenants folder into validated configs, dispatch.py says which
tenant an AGI request or a URL path belongs to (pure), server.py runs one App per
tenant behind the shared FastAGI and popup listeners and re-reads the folder on SIGHUP.
Isolation is by construction: a tenant's App has its own engine, phone index, spool,
AMI connection, popup rooms, token secret and keys; only the listeners are shared,
and they hand a request to exactly one tenant.
"""
