"""Refuse choices that do not fit together. Plain `cookiecutter` runs this hook; `tricks new` checks
the same rule in generator/options.py before it renders."""

import sys

if {{ cookiecutter.gp }} and "{{ cookiecutter.task }}" != "gan":
    sys.exit("error: gp (WGAN-GP) trains a GAN: choose task gan")
