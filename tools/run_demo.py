#!/usr/bin/env python
"""`python tools/run_demo.py ...`: the same command as the installed console script; the code is nest_ext/cli/run_demo.py."""
from nest_ext.cli.run_demo import main

if __name__ == "__main__":
    raise SystemExit(main())
