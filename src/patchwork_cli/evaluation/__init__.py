"""What the person is told about their project and its models: a run's metrics against the
current labels, evaluate's tables and plots, status, duplicate images."""
