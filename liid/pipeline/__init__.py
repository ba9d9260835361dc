"""The end-to-end runs: the stages a user types, chained, with a report (``make demo``)."""
