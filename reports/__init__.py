"""Paper-style reports: the paper's Tables 1-14 as data (``reports/paper/*.csv``), rendering from metrics.json files
(:mod:`reports.tables`), plots (:mod:`reports.plots`), metric regression (:mod:`reports.regress`) and the
reproduction plan (:mod:`reports.reproduce`). Never runs a model."""
