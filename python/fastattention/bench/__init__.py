"""Benchmarks run by `fastattention bench NAME`: each module has add_arguments(parser) and run(args)."""
