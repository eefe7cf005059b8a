"""The report: the evidence of a results folder (built once), statistics, the paper's claims and their verdicts, tables,
figures, writing it.

The top floor: reads results through :mod:`silentvae.pipeline` and :mod:`silentvae.training`; nothing imports it."""
