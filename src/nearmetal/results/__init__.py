"""The read side beyond ``nearmetal.api``: comparing two stored runs (``compare``) and A/A noise-floor runs
(``aa``). Nothing here writes a trial; ``nearmetal.api`` stays the notebook's entry point."""
