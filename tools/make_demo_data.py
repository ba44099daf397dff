#!/usr/bin/env python
"""`python tools/make_demo_data.py ...`: the same command as the installed console script; the code is nest_ext/cli/make_demo_data.py."""
from nest_ext.cli.make_demo_data import main

if __name__ == "__main__":
    raise SystemExit(main())
