"""Small measuring programs nearmetal runs as separate processes (``python -m nearmetal.tools.NAME``)."""
