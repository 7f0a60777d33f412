"""The ``sr3`` sub-commands, one module each; each defines ``add_parser(subparsers)``.

Command modules turn flags into library calls and print results; the library
(``sr3/*.py``) never imports from here.
"""
