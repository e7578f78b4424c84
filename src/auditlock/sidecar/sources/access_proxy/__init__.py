"""The access proxy: a reverse proxy that records one access event per request."""
