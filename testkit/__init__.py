"""What tests and benchmarks share: throw-away local servers (a Postgres cluster, a free port),
the Anthropic-speaking stub server, and data factories.

Not part of the application: testkit may import db, feedback, judges and training; nothing in
those packages (nor app.py or pages/) imports testkit. It needs only requirements.txt, so the
benchmarks run in the `make run` environment.
"""
