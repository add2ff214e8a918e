"""optbench-trajectory: optimizer paths on 2-D test functions follow the optimizers' update rules, the listed
minima are minima, steps-to-tolerance counts the first step below the tolerance, and the command writes its
picture, animation and table (or one paragraph naming the valid choices)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optbench.core.config import compose_config, group_options, load_option
from optbench.core.errors import ConfigError
from optbench.trajectory.docs import regenerate
from optbench.trajectory.functions import load_function
from optbench.trajectory.plot import frame_steps
from optbench.trajectory.publish import trajectory
from optbench.trajectory.run import Path as TrajectoryPath
from optbench.trajectory.run import measure, optimizer_config, run_optimizer, run_trajectories, steps_to_tolerance

pytestmark = pytest.mark.unit

COMMAND = str(Path(sys.executable).parent / "optbench-trajectory")


def _quadratic(*overrides: str):
    """The quadratic 0.5 * (x^2 + 20 y^2) (condition 20, axis-aligned) from (-4.5, 1.5): gradient (x, 20 y)."""
    pinned = ["function.params.condition=20", "function.params.angle=0", "function.start=[-4.5,1.5]"]
    cfg = compose_config("function=quadratic", *pinned, *overrides, config_name="trajectory")
    return cfg, load_function(cfg.function)


def _path(name: str, lr: float, steps: int, *extra: str, **overrides) -> np.ndarray:
    cfg, function = _quadratic(f"function.lr.{name}={lr}", *extra)
    return run_optimizer(function, name, optimizer_config(name, cfg.function), steps, **overrides).points


def test_sgd_on_the_quadratic_follows_w_minus_lr_times_gradient():
    # From (-4.5, 1.5) with lr 0.04: x <- x - 0.04 x = 0.96 x, y <- y - 0.04 * 20 y = 0.2 y.
    expected = [(-4.5, 1.5), (-4.32, 0.3), (-4.1472, 0.06), (-3.981312, 0.012)]
    np.testing.assert_allclose(_path("sgd", 0.04, 3), expected, rtol=1e-12)


def test_momentum_on_the_quadratic_follows_torchs_heavy_ball_rule():
    # torch's convention: b1 = g1, b_k = 0.9 b_(k-1) + g_k, w <- w - lr b_k (lr 0.04, momentum 0.9, no dampening).
    # x: g = -4.5, b = -4.5, x1 = -4.32; g = -4.32, b = -8.37, x2 = -3.9852; g = -3.9852, b = -11.5182, x3 = -3.524472
    # y: g = 30, b = 30, y1 = 0.3; g = 6, b = 33, y2 = -1.02; g = -20.4, b = 9.3, y3 = -1.392
    expected = [(-4.5, 1.5), (-4.32, 0.3), (-3.9852, -1.02), (-3.524472, -1.392)]
    momentum = ["+function.settings.momentum.momentum=0.9", "+function.settings.momentum.dampening=0"]
    np.testing.assert_allclose(_path("momentum", 0.04, 3, *momentum), expected, rtol=1e-12)


@pytest.mark.parametrize("name", group_options("function"))
def test_every_function_has_a_vanishing_gradient_at_its_listed_minima_and_saddles(name):
    function = load_function(load_option("function", name))
    for point in [*function.minima, *function.saddles]:
        xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(function(xy[0], xy[1]), xy)
        assert torch.linalg.norm(grad) < 1e-12, (name, point, grad)


@pytest.mark.parametrize("name", group_options("function"))
def test_every_listed_minimum_is_the_lowest_point_of_the_plot_window(name):
    function = load_function(load_option("function", name))
    x, y = np.meshgrid(np.linspace(*function.xlim, 201), np.linspace(*function.ylim, 201))
    assert (function(x, y) >= function.minimum_value - 1e-12).all()
    assert [function(np.float64(mx), np.float64(my)) for mx, my in function.minima] == pytest.approx(
        [function.minimum_value] * len(function.minima)
    )


def test_steps_to_tolerance_is_the_first_step_strictly_below_it():
    values = np.array([1.0, 0.5, 0.09, 0.2, 0.01])
    assert steps_to_tolerance(values, 0.1) == 2  # step 3 rises above it again: the first crossing counts
    assert steps_to_tolerance(values, 0.01) is None  # equal is not below
    assert steps_to_tolerance(values, 2.0) == 0  # the start itself
    assert steps_to_tolerance(values, 1e-3) is None


def test_measure_takes_distances_to_the_nearest_minimum_and_gaps_above_f_star():
    function = load_function(load_option("function", "double_well"))  # minima (0, 1) and (0, -1), f* = -0.25
    points = np.array([[-1.5, 0.0], [0.3, -0.6], [0.0, -0.95], [0.0, -0.999]])
    path = TrajectoryPath("sgd", {"lr": 0.1}, points, evaluations=3, diverged=False)
    by_distance = measure(function, path, tolerance=0.06)
    assert by_distance.steps_to_tolerance == 2 and by_distance.final_distance == pytest.approx(0.001)
    # f - f* = x^2 + 0.25 (y^2 - 1)^2: 2.5 at the start, 0.09 + 0.25 * 0.64^2 = 0.1924 at step 1
    assert function.gap(points)[:2] == pytest.approx([2.5, 0.1924])
    assert measure(function, path, tolerance=0.2, measure_on="gap").steps_to_tolerance == 1
    assert measure(function, path, tolerance=1e-9).status == "not reached"


def test_gradient_noise_is_seeded_and_shared_by_every_run_with_the_same_seed():
    first, again = _path("sgd", 0.04, 5, noise=0.5, seed=3), _path("sgd", 0.04, 5, noise=0.5, seed=3)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, _path("sgd", 0.04, 5, noise=0.5, seed=4))
    assert not np.allclose(first, _path("sgd", 0.04, 5))


def test_a_diverging_run_stops_at_its_last_finite_point_and_says_so():
    cfg, function = _quadratic("function.lr.sgd=1.0")  # y <- (1 - 20) y: |y| grows 19x per step
    path = run_optimizer(function, "sgd", optimizer_config("sgd", cfg.function), 1000)
    assert path.diverged and np.isfinite(path.points).all() and len(path.points) < 1000
    assert measure(function, path, 1e-3).status == "diverged"


def test_the_function_learning_rate_and_settings_override_the_optimizer_config():
    cfg, _ = _quadratic("function.lr.adam=0.3", "+function.settings.adam.betas=[0.5,0.9]")
    adam = optimizer_config("adam", cfg.function)
    assert adam.lr == 0.3 and list(adam.betas) == [0.5, 0.9] and adam.eps == load_option("optimizer", "adam").eps
    assert optimizer_config("lion", cfg.function).lr == cfg.function.lr.lion


def test_an_unknown_optimizer_lists_the_valid_ones():
    cfg, _ = _quadratic()
    with pytest.raises(ConfigError, match="Unknown optimizer 'adamm' in optimizers. Valid optimizers: adafactor, "):
        optimizer_config("adamm", cfg.function)


def test_an_unknown_tolerance_measure_is_refused_before_any_run():
    cfg, function = _quadratic("tolerance_on=loss")
    with pytest.raises(ConfigError, match="tolerance_on=loss: use one of distance, gap."):
        run_trajectories(cfg, function)


def test_lbfgs_takes_one_quasi_newton_iteration_per_step_and_reaches_the_minimum():
    cfg, function = _quadratic()
    lbfgs = optimizer_config("lbfgs", cfg.function, cfg.settings)
    path = run_optimizer(function, "lbfgs", lbfgs, 20)
    assert len(path.points) == 21 and path.evaluations > 20  # its line search evaluates more than once a step
    assert measure(function, path, 1e-6).steps_to_tolerance is not None


def test_animation_frames_grow_from_the_start_to_the_last_step():
    shown = frame_steps(1000, 48)
    assert shown[0] == 0 and shown[-1] == 1000 and shown == sorted(set(shown))
    assert frame_steps(3, 48, log_steps=False) == [0, 1, 2, 3]


@pytest.mark.slow  # two runs with their figures: about 10 s here
def test_the_same_config_writes_the_same_files(tmp_path):
    overrides = ["steps=12", "noise=0.2", "figure.frames=4", "figure.fps=2", "optimizers=[sgd,adam]"]
    outputs = []
    for folder in ("a", "b"):
        cfg, _ = _quadratic(*overrides, f"output_dir={tmp_path / folder}")
        trajectory(cfg)
        outputs.append({p.name: p.read_bytes() for p in sorted((tmp_path / folder).iterdir())})
    assert sorted(outputs[0]) == ["trajectory.gif", "trajectory.json", "trajectory.md", "trajectory.png"]
    assert outputs[0] == outputs[1]


@pytest.mark.slow  # a subprocess that loads torch and matplotlib: 10-40 s on a busy machine
def test_the_command_writes_the_picture_the_animation_and_the_table(tmp_path):
    args = [
        "function=quadratic",
        "optimizers=[sgd,momentum,lbfgs]",
        "steps=6",
        "figure.frames=4",
        "figure.fps=2",
        "hydra.run.dir=out",
    ]
    result = subprocess.run([COMMAND, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    record = json.loads((out / "trajectory.json").read_text())
    assert [o["optimizer"] for o in record["outcomes"]] == ["sgd", "momentum", "lbfgs"]
    assert all(len(p["points"]) == 7 for p in record["paths"].values())
    table = (out / "trajectory.md").read_text()
    assert "| Optimizer | lr | Steps to tolerance |" in table and "| lbfgs | 1 |" in table
    assert "Steps to tolerance" in result.stdout and "momentum" in result.stdout
    with Image.open(out / "trajectory.gif") as gif:
        assert gif.n_frames == len(frame_steps(6, 4))  # 0, 1, 2, 3, 6
        gif.seek(gif.n_frames - 1)
        assert gif.info["duration"] == 3 * 500  # the last frame held for fps (2) more frames at 500 ms
    with Image.open(out / "trajectory.png") as png:
        assert png.size[0] > 600


@pytest.mark.parametrize("args", [["--help"], ["--cfg", "job", "function=beale"]])
def test_help_and_config_printing_answer_without_torch(tmp_path, args):
    code = (
        "import sys\n"
        f"sys.argv = ['optbench-trajectory', *{args!r}]\n"
        "from optbench.cli.trajectory import main\n"
        "main()\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "TORCH False" in result.stdout, result.stdout + result.stderr
    if args == ["--help"]:
        assert result.stdout.startswith("optbench-trajectory: optimizer paths") and "Examples:" in result.stdout
        assert "Functions (function=name):  beale, double_well, quadratic, rosenbrock" in result.stdout
    else:
        assert "name: beale" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["function=rosenbrok"], "Unknown function 'rosenbrok'. Valid functions: beale, double_well, quadratic, "),
        (["-m", "function=beale,nosuch"], "Unknown function 'nosuch'. Valid functions: "),
        (["optimizers=[sgd,adamm]"], "Unknown optimizer 'adamm' in optimizers. Valid optimizers: adafactor, "),
    ],
)
def test_an_unknown_name_exits_2_with_the_valid_ones_before_torch_loads(tmp_path, args, message):
    code = (
        "import sys\n"
        f"sys.argv = ['optbench-trajectory', *{[*args, 'hydra.run.dir=out']!r}]\n"
        "from optbench.cli.trajectory import main\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    print('STATUS', exit.code, 'TORCH', 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "STATUS 2 TORCH False" in result.stdout, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_the_docs_generator_writes_each_blocks_images_and_table_and_then_finds_it_current(tmp_path):
    doc = tmp_path / "doc.md"
    command = "function=quadratic steps=3 'optimizers=[sgd,adam]' figure.frames=2 figure.fps=1"
    doc.write_text(f"Intro.\n\n<!-- trajectory tiny: {command} -->\nold\n<!-- end trajectory tiny -->\n\nOutro.\n")
    assert regenerate(doc) == ["tiny"]
    text = doc.read_text()
    assert text.startswith("Intro.\n\n<!-- trajectory tiny: ") and text.endswith(
        "<!-- end trajectory tiny -->\n\nOutro.\n"
    )
    assert "[![quadratic: optimizer paths](images/trajectory-tiny.png)](images/trajectory-tiny.gif)" in text
    assert "| sgd | 0.09 | not reached |" in text and "old" not in text
    assert (tmp_path / "images" / "trajectory-tiny.png").stat().st_size > 0
    assert (tmp_path / "images" / "trajectory-tiny.gif").stat().st_size > 0
    assert regenerate(doc, check=True) == []


@pytest.mark.slow  # reruns every documented command (without figures): about a minute here
def test_the_tables_in_docs_trajectory_md_are_what_their_commands_compute():
    doc = Path(__file__).resolve().parents[1] / "docs" / "trajectory.md"
    assert regenerate(doc, check=True) == [], "run: python -m optbench.trajectory.docs"
