"""The trio runtime: the only package with nurseries, locks and worker threads.

May import every other chronik_trio package. Takes its listeners, Disk and clock from its
caller (cli/main.py passes TCP, the real filesystem and trio's clock).
"""
