"""Training: one run's config, the engine, data, checkpoints and files, the diagnostics of Table 1 and Sec. 4.1.

Builds on the library (:mod:`silentvae`); imports nothing from :mod:`silentvae.pipeline` or :mod:`silentvae.report`."""
