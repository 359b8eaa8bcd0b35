"""Running as a service: metrics, health, systemd, worker processes, spool files, secrets, checks."""
