"""Closing the month (月度结账): sealed acceptances, their status, restatements and checks.

``ptmon month close | status | restate | verify`` (:mod:`ptmon.month.commands`); the workflow is
documented for the contract office in docs/month-close.md.
"""
