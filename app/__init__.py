"""The Streamlit app (installed as ``gwa_diag.app``): ``streamlit_app.py`` is the script
``gwa-diag app`` serves, ``views/`` holds its pages and cached loaders. Presentation only:
it reads a run through ``gwa_diag.analysis`` and writes nothing but relabel decisions."""
