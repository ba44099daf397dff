#!/usr/bin/env python
"""Thin wrapper: see nest_ext/cli/merge_lora.py (also installed as the `nest-merge_lora` command)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nest_ext.cli.merge_lora import main  # noqa: E402

raise SystemExit(main())
