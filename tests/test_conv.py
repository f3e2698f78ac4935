"""Convolution/pooling arithmetic against seed 003's exact numbers."""

import pytest
import torch
from click.testing import CliRunner

from cnnlab.cli import cli
from cnnlab.errors import CnnlabError
from cnnlab.inspect import conv as C

SEED_PADDED = [
    [91, 168, 224, 215, 127],
    [114, 211, 295, 262, 149],
    [192, 259, 282, 214, 122],
    [194, 251, 253, 169, 86],
    [96, 112, 110, 68, 31],
]


def seed_input():
    return C.parse_matrix(C.TUTORIAL_INPUT_5x5, "input")[0], C.parse_matrix(C.TUTORIAL_KERNEL_3x3, "k")[0]


def test_padding_one_keeps_5x5_and_matches_seed():
    x, k = seed_input()
    assert C.conv2d(x, k, padding=1).tolist() == SEED_PADDED


def test_stride_two_matches_seed():
    x, k = seed_input()
    assert C.conv2d(x, k, stride=2).tolist() == [[211, 262], [251, 169]]


def test_max_pool_matches_seed():
    x = C.parse_matrix(C.TUTORIAL_INPUT_4x4, "input")[0]
    assert C.pool2d(x, 2).tolist() == [[4, 8], [9, 8]]
    assert C.pool2d(x, 2, mode="avg").tolist() == [[3.25, 6.25], [5.75, 6.25]]


def test_conv2d_shapes_like_seed():
    weight, out = C.conv_shape((1, 5, 100, 100), 10, 3)
    assert list(weight) == [10, 5, 3, 3]
    assert list(out) == [1, 10, 98, 98]


@pytest.mark.parametrize("size,k,s,p,expected", [(5, 3, 1, 1, 5), (5, 3, 2, 0, 2),
                                                  (28, 5, 1, 2, 28), (32, 3, 1, 1, 32),
                                                  (4, 2, 2, 0, 2), (100, 3, 1, 0, 98)])
def test_output_size_formula(size, k, s, p, expected):
    assert C.output_size(size, k, s, p) == expected
    out = torch.nn.functional.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, k, k),
                                     stride=s, padding=p)
    assert out.shape[-1] == expected


def test_cli_conv_and_pool_print_seed_numbers():
    runner = CliRunner()
    res = runner.invoke(cli, ["conv", "--padding", "1"])
    assert res.exit_code == 0, res.output
    assert "[ 91 168 224 215 127]" in res.output
    assert "floor((5 + 2*1 - 3) / 1) + 1 = 5" in res.output
    res = runner.invoke(cli, ["conv", "--stride", "2"])
    assert "[211 262]" in res.output and "[251 169]" in res.output
    res = runner.invoke(cli, ["pool"])
    assert res.exit_code == 0 and "[4 8]" in res.output and "[9 8]" in res.output
    res = runner.invoke(cli, ["conv", "--shape", "1,5,100,100", "--out-channels", "10"])
    assert res.exit_code == 0 and "output [1, 10, 98, 98]" in res.output


@pytest.mark.parametrize("args,needle", [
    (["conv", "--input", "1 2; 3"], "rows of different lengths (2, 1)"),
    (["conv", "--input", "1 2 3 4 5"], "kernel 3x3 does not fit input 1x5"),
    (["conv", "--input", "1 a"], "numbers"),
    (["conv", "--input", "1 2; 3 4", "--kernel", "1 2 3; 4 5 6; 7 8 9"], "does not fit"),
    (["conv", "--stride", "0"], "stride"),
    (["conv", "--shape", "1,5,100"], "--shape"),
    (["conv", "--kernel-size", "7"], "--kernel-size and --out-channels go with --shape"),
    (["conv", "--out-channels", "4"], "go with --shape"),
    (["conv", "--shape", "1,3,8,8", "--kernel", "1 2; 3 4"], "not both"),
    (["pool", "--kernel-size", "0"], "kernel-size"),
    (["pool", "--stride", "0"], "stride must be at least 1"),
])
def test_cli_bad_input_is_one_line_error(args, needle):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0
    assert needle in res.output
    assert "Traceback" not in res.output


def test_parse_matrix_rejects_empty():
    with pytest.raises(CnnlabError):
        C.parse_matrix("  ;  ", "input")


def test_conv_input_forms(tmp_path):
    """The tutorial's 25 numbers in one row (before .view(1, 1, 5, 5)) are read as 5x5 and
    the output says so; the same matrix given by rows gives the same result."""
    flat = " ".join(C.TUTORIAL_INPUT_5x5.replace(";", " ").split())
    x, note = C.parse_matrix(flat, "--input")
    rows, no_note = C.parse_matrix(C.TUTORIAL_INPUT_5x5, "--input")
    assert x.shape == (5, 5) and torch.equal(x, rows) and no_note is None
    assert "25 numbers in one row as 5x5" in note
    commas, _ = C.parse_matrix(flat.replace(" ", ","), "--input")
    assert torch.equal(commas, rows)
    not_square, note = C.parse_matrix("1 2 3 4 5 6", "--input")
    assert not_square.shape == (1, 6) and note is None
    res = CliRunner().invoke(cli, ["conv", "--input", flat, "--padding", "1"])
    assert res.exit_code == 0, res.output
    assert "as 5x5" in res.output and "[ 91 168 224 215 127]" in res.output
    ragged = CliRunner().invoke(cli, ["conv", "--input", "1 2 3; 4 5; 6 7 8"])
    assert ragged.exit_code == 1 and "rows of different lengths (3, 2, 3)" in ragged.output


def test_help_texts_name_no_in_house_seeds():
    for cmd in ("conv", "pool", "summary", "train", "models"):
        out = CliRunner().invoke(cli, [cmd, "--help"]).output
        assert "seed 00" not in out and "seeds 00" not in out, cmd
    assert "the tutorial's 5x5 example" in CliRunner().invoke(cli, ["conv", "--help"]).output
