"""Tables in a study's own shape (GPU sharing's time-slicing, partition, scaling and topology tables; the
resilience, fs-layers and net-paths tables), shown after the loss tables by every report format.

A study adds its tables with a module here whose ``tables(results) -> list[Table]`` is decorated with
``@study_table`` (``report.tables.STUDY_TABLES`` imports every module of this package on first use)."""
