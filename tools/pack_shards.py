#!/usr/bin/env python
"""`python tools/pack_shards.py ...`: the same command as the installed console script; the code is nest_ext/cli/pack_shards.py."""
from nest_ext.cli.pack_shards import main

if __name__ == "__main__":
    raise SystemExit(main())
