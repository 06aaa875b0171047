"""`python -m toolkit ...` is the same as `ablate ...`."""

from toolkit.cli import main

raise SystemExit(main())
