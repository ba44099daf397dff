#!/usr/bin/env python
"""`python tools/evaluate_restoration.py ...`: the same command as the installed console script; the code is
nest_ext/cli/evaluate_restoration.py."""
from nest_ext.cli.evaluate_restoration import main

if __name__ == "__main__":
    raise SystemExit(main())
