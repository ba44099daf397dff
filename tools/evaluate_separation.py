#!/usr/bin/env python
"""`python tools/evaluate_separation.py ...`: the same command as the installed console script; the code is nest_ext/cli/evaluate_separation.py."""
from nest_ext.cli.evaluate_separation import main

if __name__ == "__main__":
    raise SystemExit(main())
