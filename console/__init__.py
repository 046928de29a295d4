"""The console: the screens managers and support work in, under ``/ui/`` on the API port
(templates rendered on the server, a small script of ours, sessions kept server-side).
Every page goes through the same scoped stores as the API."""
