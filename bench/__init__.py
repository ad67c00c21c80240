"""The gateway's benchmark: open-loop streaming load, straight to the simulator and through the gateway.

``python -m bench`` (``make bench``, ``make bench-quick``); see ``bench/run.py``.
"""
