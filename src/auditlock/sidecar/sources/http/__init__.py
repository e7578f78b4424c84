"""JSON over HTTP: `POST /v1/events` (server.py), body decoding (body.py), its config."""
