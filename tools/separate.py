#!/usr/bin/env python
"""`python tools/separate.py ...`: the same command as the installed console script; the code is nest_ext/cli/separate.py."""
from nest_ext.cli.separate import main

if __name__ == "__main__":
    raise SystemExit(main())
