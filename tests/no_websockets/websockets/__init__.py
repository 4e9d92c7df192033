# Put first on PYTHONPATH by the ``without_websockets`` fixture (tests/conftest.py): the skill then
# meets a machine without the websockets package, as on a deployment that copied two files only.
raise ImportError("websockets is hidden from this test's skill processes")
