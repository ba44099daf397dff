#!/usr/bin/env python
"""Thin wrapper: see nest_ext/cli/evaluate_llm_asr.py (also installed as the `nest-evaluate_llm_asr` command)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nest_ext.cli.evaluate_llm_asr import main  # noqa: E402

raise SystemExit(main())
