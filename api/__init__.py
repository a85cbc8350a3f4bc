"""The edges: the HTTP API and the command line."""
