"""tracegrad.utils: shared helpers for the frontend."""
