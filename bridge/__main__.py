"""`python -m bridge` is the same program as the `pypi-bridge` console script."""

from bridge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
