"""The pipeline Snakemake runs: the plan of runs a config asks for, the results layout, each notebook's job, one GPU per job.

Builds on :mod:`silentvae.training`; imports nothing from :mod:`silentvae.report`."""
