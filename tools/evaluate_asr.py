#!/usr/bin/env python
"""`python tools/evaluate_asr.py ...`: the same command as the installed console script; the code is nest_ext/cli/evaluate_asr.py."""
from nest_ext.cli.evaluate_asr import main

if __name__ == "__main__":
    raise SystemExit(main())
