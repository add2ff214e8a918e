from optbench.training.train import train


def test_default_config_trains_and_reports_test_accuracy(make_cfg):
    metrics = train(make_cfg())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["train/steps"] == 4
