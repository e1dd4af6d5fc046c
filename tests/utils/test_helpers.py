"""Small shared helpers: read_json_if_exists, lies_inside, add_new_parameters, look_up, progress_bar."""

from __future__ import annotations

import io

import pytest
import torch
from monai.utils import StrEnum
from torch import nn

from monai_bayes.utils import add_new_parameters, lies_inside, look_up, progress_bar, read_json_if_exists


class _Colour(StrEnum):
    RED = "red"
    GREEN = "green"


def test_read_json_if_exists(tmp_path):
    assert read_json_if_exists(None) is None
    assert read_json_if_exists(tmp_path / "missing.json") is None
    (tmp_path / "ok.json").write_text('{"a": [1, 2]}')
    assert read_json_if_exists(tmp_path / "ok.json") == {"a": [1, 2]}
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"):
        read_json_if_exists(tmp_path / "bad.json")


def test_lies_inside_resolves_dots_and_links(tmp_path):
    root = tmp_path / "out"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    assert lies_inside(root / "a" / "new.dcm", root)  # need not exist
    assert lies_inside(root, root)
    assert not lies_inside(root / ".." / "x.dcm", root)
    assert not lies_inside(root / "link" / "x.dcm", root)  # a symbolic link out of the folder
    assert not lies_inside(tmp_path / "out2" / "x", root)  # a sibling sharing the name's prefix


def test_add_new_parameters_adds_only_what_the_optimizer_lacks():
    net = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, weight_decay=1e-4)
    assert add_new_parameters(optimizer, net) == []
    net.rho = nn.Parameter(torch.zeros(4))
    net.frozen = nn.Parameter(torch.zeros(2), requires_grad=False)
    new = add_new_parameters(optimizer, net, lr=0.01)
    assert [p is net.rho for p in new] == [True]
    group = optimizer.param_groups[-1]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.0 and group["params"] == [net.rho]
    assert add_new_parameters(optimizer, net) == []  # idempotent


def test_look_up_names_the_option():
    assert look_up("colour", "green", _Colour) is _Colour.GREEN
    assert look_up("colour", _Colour.RED, _Colour) is _Colour.RED
    with pytest.raises(ValueError, match=r"(?s)colour: .*'blue'(?=.*'red')(?=.*'green')"):
        look_up("colour", "blue", _Colour)


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("tty", "enabled", "drawn"),
    [(True, None, True), (False, None, False), (False, True, True), (True, False, False)],
)
def test_progress_bar_follows_the_terminal_only_policy(monkeypatch, tty, enabled, drawn):
    stream = _Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    assert list(progress_bar(range(3), enabled=enabled, desc="demo")) == [0, 1, 2]
    assert ("demo" in stream.getvalue()) is drawn
