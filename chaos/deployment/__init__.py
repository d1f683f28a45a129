"""The deployment under test: launcher, gunicorn process discovery, release environments, target-side files."""
