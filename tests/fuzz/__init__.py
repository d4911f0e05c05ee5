"""Fuzzing the data path from PyPI's bytes to the bridge's records, coverage-guided.

One target, chained the way a page travels (`tests.fuzz.target`): bytes -> `decode_changelog`
-> `check_page` -> `parse_row` -> the record value the sink writes, with the standard library's
`xmlrpc.client.loads` as the decoder's reference. The engine is atheris, libFuzzer for Python
(`tests.fuzz.engine`); `python -m tests.fuzz` runs it for a while and says what it found
(`make fuzz`, `make test` through `tests/test_fuzz.py`).

- `corpus/changelog/`: the committed seed corpus (real-shaped pages, faults, odd encodings, and
  every input that ever broke a property, named `regression-*`, or `known-*` while the bug is
  reported but not fixed); `python -m tests.fuzz.seeds` writes the generated seeds again.
- `xmlrpc.dict`: the XML-RPC tokens libFuzzer splices into its mutations.
- `.cache/fuzz/` (not committed): the corpus a run grows, and what a run finds.
"""
