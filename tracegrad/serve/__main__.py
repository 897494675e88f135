"""`python -m tracegrad.serve CHECKPOINT --port N` (see cli.py)."""
from .cli import main

raise SystemExit(main())
