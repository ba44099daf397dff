#!/usr/bin/env python
"""`python tools/compare_with_nemo.py ...`: the same command as the installed console script; the code is nest_ext/cli/compare_with_nemo.py."""
from nest_ext.cli.compare_with_nemo import main

if __name__ == "__main__":
    raise SystemExit(main())
