"""engine.tomlpos: TOML read with file:line errors, bounded in size and nesting."""

from __future__ import annotations

import pytest

from engine.errors import InvalidFile
from engine.tomlpos import MAX_BYTES, MAX_DEPTH, TomlDocument


def _problem(text: str) -> str:
    with pytest.raises(InvalidFile) as caught:
        TomlDocument.parse("campaigns/deep.toml", text)
    return str(caught.value)


def test_thousands_of_nested_arrays_are_a_clear_error_not_a_recursion_error():
    message = _problem('name = "x"\n\nvalues = ' + "[" * 2000 + "]" * 2000 + "\n")
    assert message == f"campaigns/deep.toml:3: arrays or inline tables nested more than {MAX_DEPTH} levels deep"
    assert "nested more than" in _problem("a = " + "{ b = " * 100 + "1" + " }" * 100)


def test_nesting_up_to_the_limit_and_brackets_in_strings_and_comments_are_fine():
    brackets = "[" * 100
    text = (f"a = {'[' * MAX_DEPTH}1{']' * MAX_DEPTH}\n"
            f'b = "{brackets}"  # {brackets}\n'
            f"c = '{brackets}'\n"
            f'd = """\n{brackets}\n"""\n'
            f"e = '''{brackets}'''\n"
            f'f = "quote \\" {brackets}"\n'
            "[table]\n[[rows]]\nx = 1\n")
    data = TomlDocument.parse("x.toml", text).data
    assert data["b"] == brackets and data["d"] == brackets + "\n" and data["f"] == f'quote " {brackets}'
    assert data["rows"] == [{"x": 1}]


def test_an_oversized_file_is_refused_before_parsing():
    message = _problem("# " + "x" * MAX_BYTES)
    assert message.startswith("campaigns/deep.toml: too large for a TOML file here")
