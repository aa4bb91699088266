"""Evaluation-driven leaderboard harness for model merging and DPO.

The pipeline is Recipe -> Build -> Evaluate -> Record -> Report; each stage is a
subpackage with one public entry point, and ``harness.cli`` is a thin layer on top.
"""

__version__ = "0.1.0"
