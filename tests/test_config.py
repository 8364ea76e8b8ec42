import re
from pathlib import Path

import pytest
import yaml

from patchwork_cli.errors import PatchworkError
from patchwork_cli.sampling.registry import STRATEGIES
from patchwork_cli.store.config import Config, load_config, parse_config, replace_classes
from patchwork_cli.store.project import template_text


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "patchwork.yaml"
    path.write_text(text)
    return path


def test_template_parses_to_the_documented_defaults():
    text = replace_classes(template_text(), ["cat", "dog"])
    config = parse_config(yaml.safe_load(text), "patchwork.yaml")
    assert config == Config(classes=["cat", "dog"])
    assert config.imshape == [224, 224]
    assert config.extractor.name == "efficientnet_lite0"
    assert config.training.stratify == "class"


def test_the_template_documents_every_key():
    """Each key of the config's dataclasses has its line (and comments) in project-template/patchwork.yaml."""
    import dataclasses

    data = yaml.safe_load(template_text())
    defaults = Config(classes=["a"])
    for section in dataclasses.fields(Config):
        value = getattr(defaults, section.name)
        if dataclasses.is_dataclass(value):
            assert sorted(data[section.name]) == sorted(f.name for f in dataclasses.fields(value)), section.name
        else:
            assert section.name in data


def test_the_template_names_every_strategy():
    """The comment on sampling.strategy lists the strategies by hand (a comment cannot be built):
    each of sampling/registry.py's must be there."""
    comment = template_text().partition("\nsampling:\n")[2].partition("\n  strategy:")[0]
    named = set(re.findall(r"[a-z][\w+:-]*[\w+]", comment.replace(":CLASS", ":C")))
    assert sorted(set(STRATEGIES) - named) == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("classes: [a]\ntrainig: {}\n", "unknown key 'trainig' (did you mean 'training'?)"),
        ("classes: [a]\ntraining: {epoch: 3}\n", "unknown key 'training.epoch' (did you mean 'training.epochs'?)"),
        ("classes: [a]\ntraining: {epochs: ten}\n", "training.epochs: expected an integer, got 'ten'"),
        ("classes: [a]\ntraining: {epochs: 0}\n", "training.epochs: must be at least 1, got 0"),
        ("classes: [a]\nextractor: {pooling: mean}\n", "extractor.pooling: expected one of 'avg', 'max', got 'mean'"),
        ("classes: [a]\ntraining: {seed: true}\n", "training.seed: expected an integer, got True"),
        ("classes: [a]\nmodel: 3\n", "model: expected a mapping of keys, got 3"),
        ("imshape: [3, 3]\n", "missing key 'classes'"),
        ("classes: []\n", "classes: at least one class is needed"),
        ("classes: [a, a]\n", "class 'a' is given twice"),
        ("classes: ['a:b']\n", "invalid class name 'a:b'"),
        ("classes: [filepath]\n", "reserved labels.csv column"),
        ("classes: [cat]\nimshape: [224]\n", "imshape: expected [height, width]"),
        ("classes: [cat, dog]\nsampling: {strategy: 'maxent:dgo'}\n", "unknown class 'dgo' in 'maxent:dgo' (did you"),
        ("- a\n- b\n", "expected a mapping of keys at the top level"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(PatchworkError) as error:
        load_config(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_invalid_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "classes: [a, b]\nmodel:\n  head: [unclosed\n")
    with pytest.raises(PatchworkError, match=r"patchwork.yaml:\d+: invalid YAML"):
        load_config(path)


def test_non_utf8_config_is_refused(tmp_path):
    path = tmp_path / "patchwork.yaml"
    path.write_bytes(b"classes: [caf\xe9]\n")
    with pytest.raises(PatchworkError, match="not UTF-8"):
        load_config(path)


def test_replace_classes_keeps_comments_and_other_keys():
    text = "# top comment\nclasses:\n  - cat\n  - dog\n# about training\ntraining:\n  epochs: 7  # seven\n"
    new = replace_classes(text, ["cat", "dog", "bird"])
    assert "# top comment" in new and "# about training" in new and "# seven" in new
    assert yaml.safe_load(new) == {"classes": ["cat", "dog", "bird"], "training": {"epochs": 7}}


def test_replace_classes_quotes_names_that_need_it():
    new = replace_classes("classes: [a]\n", ["yes", "1", "two words"])
    assert yaml.safe_load(new)["classes"] == ["yes", "1", "two words"]
