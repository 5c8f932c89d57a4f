"""``python -m reproduce ...`` is the ``repro`` command (for machines where it is not installed)."""

from reproduce.harness.cli import main

raise SystemExit(main())
