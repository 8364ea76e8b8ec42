"""Feature extractors: the networks that turn pixels into features (loading.py, efficientnet_lite0.py,
which start TensorFlow), and what runs them (runtimes.py, conversion.py, which do not need it to run
a converted model: LiteRT and OpenVINO run without TensorFlow)."""
