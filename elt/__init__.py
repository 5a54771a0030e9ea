"""The ELT job: copy one PostgreSQL database into another, atomically and verifiably.

`elt/elt_script.py` is the entry point; docs/how-it-works.md maps the modules.
"""
