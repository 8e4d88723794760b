"""Tables in a study's own shape, shown after the loss tables by every report format: one module per shipped
study, named like its YAML (``time_slicing`` ↔ ``studies/time-slicing.yaml``), plus the shapes any plan can
have (``pods``: a run on the Kubernetes backend; ``rootless``: rootless cells beside their rootful twins).

A study adds its tables with a module here whose ``tables(results) -> list[Table]`` is decorated with
``@study_table`` (``report.tables.STUDY_TABLES`` imports every module of this package on first use)."""
