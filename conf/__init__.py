# conf/ ships inside the package as optbench.conf (pyproject.toml maps it there), so that Hydra finds the
# configs through pkg://optbench.conf from any folder. Nothing to import here; edit the YAML files.
