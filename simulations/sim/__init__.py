"""The discrete-event simulator. Its per-task modules run compiled when a mypyc build
matching these sources is present (``simulations.native``), else interpreted: the
same results either way."""

from simulations import native

native.attach(__path__)
