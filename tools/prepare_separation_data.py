#!/usr/bin/env python
"""`python tools/prepare_separation_data.py ...`: the same command as the installed console script; the code is nest_ext/cli/prepare_separation_data.py."""
from nest_ext.cli.prepare_separation_data import main

if __name__ == "__main__":
    raise SystemExit(main())
