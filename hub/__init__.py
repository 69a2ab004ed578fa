"""Forestry Exchange Hub (林业政务交换枢纽)."""

__version__ = "0.1.0"
