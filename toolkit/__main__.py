"""`python -m toolkit ...` is the same as `ablate ...`."""

from toolkit.cli import main

if __name__ == "__main__":  # not when a spawned worker process re-imports the main module
    raise SystemExit(main())
