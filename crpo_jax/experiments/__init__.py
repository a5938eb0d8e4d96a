"""Experiments that measure the method: runners, their statistics and reports."""
