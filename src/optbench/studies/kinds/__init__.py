"""One module per kind of measurement; each class is registered under the entry-point group
optbench.study_kinds (pyproject.toml) and loaded only when a study of that kind runs."""
