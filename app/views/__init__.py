"""The gwa-diag Streamlit app: data access (:mod:`.data`), charts (:mod:`.charts`) and pages.

Presentation only: every number comes from :mod:`gwa_diag` (store, summaries, rank,
metrics, relabel); this package selects, sorts, pages and draws.
"""
