#!/usr/bin/env python
"""`python tools/merge_lora.py ...`: the same command as the installed console script; the code is nest_ext/cli/merge_lora.py."""
from nest_ext.cli.merge_lora import main

if __name__ == "__main__":
    raise SystemExit(main())
