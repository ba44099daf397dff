#!/usr/bin/env python
"""`python tools/convert_mossformer2_checkpoint.py ...`: the same command as the installed console script; the code is nest_ext/cli/convert_mossformer2_checkpoint.py."""
from nest_ext.cli.convert_mossformer2_checkpoint import main

if __name__ == "__main__":
    raise SystemExit(main())
