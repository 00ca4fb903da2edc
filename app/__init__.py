"""The Streamlit app (installed as ``gwa_diag.app``): ``streamlit_app.py`` is the script
``gwa-diag app`` serves, ``views/`` holds its pages and the modules they read the run through.

Presentation only: every number it shows comes from the analysis layer, and it writes
nothing but relabel decisions (through ``gwa_diag.analysis.relabel``). Of gwa_diag, the app
and its views import the analysis layer, the input checks, the run store and the dataset
loaders (to show the images), never the training loop or the CLI; their own modules are
always allowed.

May import: gwa_diag.analysis, gwa_diag.checks, gwa_diag.store, gwa_diag.training.data.
"""
