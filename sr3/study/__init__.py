"""The human 2AFC study behind SR3's headline metric (``sr3 study``).

Saharia et al. 2021 (SR3, Sec. 4.2 and Fig. 5) measure super-resolution quality
with a two-alternative forced-choice experiment: a rater sees a model's output
beside the real photo and picks the one "from a camera"; the *confusion rate*
(also called fool rate) is the share of trials where the model's output was
picked.  50% means raters cannot tell the two apart.

Modules, one concept each:

* :mod:`.config`  - the frozen study configuration saved in the database
* :mod:`.db`      - schema and the one small SQL layer (SQLite, optional PostgreSQL)
* :mod:`.design`  - the seeded trial design: sides, rater sequences, catch trials
* :mod:`.create`  - ``sr3 study create``: match files, re-encode images, write the study
* :mod:`.server`  - ``sr3 study serve``: the FastAPI rater app and admin endpoints
* :mod:`.report`  - ``sr3 study report``: confusion rates, bootstrap CIs, chart
* :mod:`.cli`     - argparse wiring
"""
