"""The tests, as packages that mirror tenfold's (an __init__.py in every folder), so that test files
in different folders may share a name: pytest would otherwise import both as one module."""
