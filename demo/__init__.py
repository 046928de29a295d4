"""``relaybook demo``: a self-checking tour of the whole system on the embedded defaults,
on a sample co-ownership (``demo/owners.py``), told step by step (``demo/output.py``)."""

from demo.tour import run_demo

__all__ = ["run_demo"]
