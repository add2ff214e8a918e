"""The shape of the package: layers without circles, small modules, configs in the package, fast start-up,
no import-time side effects, study kinds found through their registry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from optbench.core.errors import ConfigError
from optbench.studies.config import load_study, override, study_names
from optbench.studies.registry import kind_names, load_kind

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "optbench"
# Each layer imports only its own and the ones before it (DESIGN.md; README, "Architecture").
LAYERS = [
    "core",
    "cluster",
    "stats",
    "tracking",
    "training",
    "tuning",
    "compare",
    "suite",
    "trajectory",
    "studies",
    "cli",
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every optbench module `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("optbench"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from optbench.compare import report`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("optbench"))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "conf" not in p.parts}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def test_the_package_has_no_import_circles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_each_layer_imports_only_itself_and_the_layers_below():
    upward = [
        f"{module} ({LAYERS[_layer(module)]}) imports {target} ({LAYERS[_layer(target)]})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(module) is not None and _layer(target) is not None and _layer(target) > _layer(module)
    ]
    assert upward == []


def test_core_code_never_imports_a_study_kind():
    importers = {m for m, targets in _graph().items() for t in targets if t.startswith("optbench.studies.kinds.")}
    assert {m for m in importers if not m.startswith("optbench.studies.kinds.")} == set()


def test_no_module_is_over_450_lines():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > 450} == {}


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


HEAVY = ("torch", "lightning", "mlflow", "optuna", "pandas")


@pytest.mark.parametrize(
    "entry, args, status",
    [
        ("train", ["--help"], 0),
        ("train", ["--cfg", "job", "optimizer=sgd"], 0),
        ("train", ["batch_size=0"], 2),  # a bad value, reported before Lightning is imported
        ("train", ["optimizer=nosuch"], 1),  # Hydra's own error for an unknown option
        ("tune", ["--help"], 0),
        ("compare", ["--cfg", "job"], 0),
        ("target", ["--cfg", "job"], 0),
        ("find", ["--help"], 0),
    ],
)
def test_help_config_printing_and_config_errors_import_no_heavy_library(entry, args, status, tmp_path):
    function = {"find": "lr_find_main", "train": "cli"}.get(entry, "main")  # the console scripts' functions
    code = (
        "import sys\n"
        f"sys.argv = ['optbench-{entry}', *{args!r}]\n"
        f"from optbench.cli.{entry} import {function}\n"
        f"try:\n    {function}()\nexcept SystemExit as exit:\n    code = exit.code or 0\nelse:\n    code = 0\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), 'STATUS', code)\n"
    )
    result = _run_python(code, tmp_path)  # from an unrelated folder: the configs come from the package
    assert "HEAVY [] STATUS " + str(status) in result.stdout, result.stdout + result.stderr


def test_train_help_describes_the_command_and_lists_only_the_groups_it_accepts(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).parent / "optbench-train"), "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("optbench-train: train one model") and "Examples:" in text
    listed = {line.split()[0] for line in text.split("Groups (group=option):")[1].strip().splitlines()[:9]}
    assert listed == {
        "workload",
        "data",
        "model",
        "optimizer",
        "scheduler",
        "precision",
        "strategy",
        "trainer",
        "logger",
    }
    assert "adamw" in text and "study:" not in text and "tune:" not in text and "powered by Hydra" not in text


def test_packaged_configs_compose_from_any_folder(tmp_path):
    code = "from optbench.core.config import compose_config\nprint(compose_config('optimizer=sgd').optimizer.name)"
    result = _run_python(code, tmp_path)
    assert result.stdout.strip() == "sgd", result.stderr


def test_importing_every_module_changes_no_warning_filter_and_no_log_level(tmp_path):
    code = """
import importlib, logging, pkgutil, warnings
for library in ("torch", "lightning.pytorch", "mlflow", "optuna", "optuna_integration", "pandas", "scipy.stats",
                "matplotlib", "torchvision", "pytorch_optimizer", "sklearn", "rich"):
    importlib.import_module(library)  # their own filters are not optbench's doing
import optbench
before = (list(warnings.filters), {n: logging.getLogger(n).level for n in ("lightning.pytorch", "optbench", "")})
for info in pkgutil.walk_packages(optbench.__path__, "optbench."):
    if ".conf" not in info.name:
        importlib.import_module(info.name)
after = (list(warnings.filters), {n: logging.getLogger(n).level for n in ("lightning.pytorch", "optbench", "")})
print("SAME" if before == after else f"CHANGED {before} {after}")
"""
    result = _run_python(code, tmp_path)
    assert result.stdout.strip() == "SAME", result.stdout + result.stderr


def test_every_study_names_a_registered_kind():
    assert {str(load_study(name).kind) for name in study_names()} <= set(kind_names())
    for name in kind_names():
        kind = load_kind(name)
        assert callable(kind.measure) and callable(kind.report) and kind.plot_name.endswith(".png")
    with pytest.raises(ConfigError, match="unknown kind 'nosuch'. Kinds: adamw_vs_adam_l2, "):
        load_kind("nosuch")


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 1.0e-9, "tune.metric=val/acc", "it's", ["a=1", "b"], {"batch_1": 1, "full": "full"}, [[1, 2], []]],
)
def test_preset_values_survive_hydras_override_grammar(value):
    (parsed,) = OverridesParser.create().parse_overrides([override("study.key", value)])
    assert parsed.value() == value


def test_study_overrides_go_through_hydra_and_unknown_keys_are_refused():
    assert load_study("loss_vs_lr_scale", None, ["steps=3"]).steps == 3
    with pytest.raises(ConfigError, match="Could not override 'study.stepz'"):
        load_study("loss_vs_lr_scale", None, ["stepz=3"])
