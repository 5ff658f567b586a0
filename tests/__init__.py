"""The test suite (a package, so shared test code imports as ``tests.helpers...``)."""
