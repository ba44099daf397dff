#!/usr/bin/env python
"""`python tools/build_tokenizer.py ...`: the same command as the installed console script; the code is nest_ext/cli/build_tokenizer.py."""
from nest_ext.cli.build_tokenizer import main

if __name__ == "__main__":
    raise SystemExit(main())
