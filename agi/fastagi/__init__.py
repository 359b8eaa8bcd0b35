"""FastAGI: the pure codec, the server, the call flow of incoming/outgoing/hangup."""
