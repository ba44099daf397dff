#!/usr/bin/env python
"""`python tools/restore.py ...`: the same command as the installed console script; the code is nest_ext/cli/restore.py."""
from nest_ext.cli.restore import main

if __name__ == "__main__":
    raise SystemExit(main())
