"""The plugin API: a PBX-neutral websocket at /plugin (README.rst "Plugin API").

protocol.py decodes and checks messages against the JSON Schemas in schemas/ (the
documentation and the check are the same files), calls.py turns call events into the
same Call rows, live updates and popups as the AGI + AMI path, session.py is one
connection (key, scopes, rate), client.py the reference client and `crmagi plugin replay`.
"""
