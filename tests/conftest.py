pytest_plugins = ["tests.site.fixtures"]
