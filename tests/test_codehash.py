"""A stage's key follows the code it runs: not its docstrings, comments or layout."""

from psaq.codehash import source_hash


def test_docstrings_comments_and_layout_change_no_hash_and_code_does(tmp_path):
    a = tmp_path / "a.py"
    a.write_text('"""Module."""\n\ndef f(x):\n    """Twice."""\n    return 2 * x  # double\n\n\nclass C:\n    """A."""\n')
    b = tmp_path / "b.py"
    b.write_text('"""Another text."""\ndef f(x):\n    """Still twice, said otherwise."""\n    # why: a comment\n'
                 '    return 2*x\nclass C:\n    """B."""\n')
    c = tmp_path / "c.py"
    c.write_text('def f(x):\n    return 3 * x\n\n\nclass C:\n    pass\n')
    assert source_hash(a) == source_hash(b)
    assert source_hash(a) != source_hash(c)
    d = tmp_path / "d.py"
    d.write_text('def f(x):\n    x = "a string that is no docstring"\n    return 2 * x\n')
    e = tmp_path / "e.py"
    e.write_text('def f(x):\n    x = "another string"\n    return 2 * x\n')
    assert source_hash(d) != source_hash(e)  # strings that are code count
    sh = tmp_path / "run.sh"
    sh.write_text("echo 1 # x\n")
    other = tmp_path / "run2.sh"
    other.write_text("echo 1 # y\n")
    assert source_hash(sh) != source_hash(other)  # not Python: by its bytes
